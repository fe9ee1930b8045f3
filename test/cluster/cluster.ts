import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { sleep } from '../../src/sleep.js';

/**
 * A real 3-master / 3-replica Redis Cluster on loopback high ports, built from the machine's
 * redis-server and redis-cli. No persistence; everything lives in a temp dir removed on stop.
 */
export interface LocalCluster {
  /** "127.0.0.1:port" of every node, for REDIS_CLUSTER_NODES. */
  nodes: string[];
  /** REDIS_CLUSTER_NODES value. */
  seeds: string;
  /** Ports of the current masters (alive ones only). */
  masters(): Promise<number[]>;
  /**
   * Moves `slots` hash slots from one master to another with `redis-cli --cluster reshard` (keys
   * migrate one pipeline at a time, so clients meet ASK, TRYAGAIN and then MOVED). Resolves when done.
   */
  reshard(slots: number): Promise<{ from: number; to: number; ms: number }>;
  /** SIGKILLs the given master (or the first one found), waits for its replica to take over. */
  killMaster(options?: { port?: number }): Promise<{ port: number; promoted: number; failoverMs: number }>;
  stop(): Promise<void>;
}

const alive = new Set<ChildProcess>();
// A crashed or interrupted test run must not leave redis-servers behind.
process.once('exit', () => {
  for (const c of alive) c.kill('SIGKILL');
});

/** Throws a readable error when redis-server / redis-cli are missing or older than 7 (no SPUBLISH). */
export function requireRedisServer(): string {
  let version: string;
  try {
    version = execFileSync('redis-server', ['--version'], { encoding: 'utf8' });
    execFileSync('redis-cli', ['--version'], { encoding: 'utf8' });
  } catch (err) {
    throw new Error(
      `the cluster suite needs redis-server and redis-cli >= 7 on PATH (apt-get install redis-server): ${(err as Error).message}`,
    );
  }
  const major = Number(/v=(\d+)\./.exec(version)?.[1] ?? 0);
  if (major < 7) throw new Error(`redis-server ${version.trim()} is too old: sharded pub/sub needs Redis 7`);
  return version.trim();
}

function probe(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  return r;
}

async function withNode<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = probe(port);
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

interface NodeLine {
  id: string;
  port: number;
  master: boolean;
  failed: boolean;
  masterId: string | null;
}

function parseNodes(text: string): NodeLine[] {
  return text
    .trim()
    .split('\n')
    .map((line) => {
      const [id, addr, flags, masterId] = line.split(' ') as [string, string, string, string];
      return {
        id,
        port: Number(addr.split('@')[0]!.split(':')[1]),
        master: flags.split(',').includes('master'),
        failed: /fail/.test(flags),
        masterId: masterId === '-' ? null : masterId,
      };
    });
}

/**
 * Starts six nodes on `basePort`..`basePort+5` (bus ports +10000), creates the cluster with one
 * replica per master and waits until every node reports cluster_state:ok with all 16384 slots.
 * `nodeTimeoutMs` is cluster-node-timeout: how long a dead master goes unnoticed.
 */
export async function startCluster(basePort: number, options: { nodeTimeoutMs?: number } = {}): Promise<LocalCluster> {
  requireRedisServer();
  const dir = mkdtempSync(join(tmpdir(), 'unread-cluster-'));
  const ports = Array.from({ length: 6 }, (_, i) => basePort + i);
  const procs = new Map<number, ChildProcess>();
  const nodeTimeout = options.nodeTimeoutMs ?? 1_000;

  const stop = async () => {
    await Promise.all(
      [...procs.values()].map(async (c) => {
        if (c.exitCode === null && c.signalCode === null) {
          const gone = new Promise((r) => c.once('exit', r));
          c.kill('SIGKILL');
          await gone;
        }
        alive.delete(c);
      }),
    );
    procs.clear();
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    for (const port of ports) {
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${port}.conf`,
          '--cluster-node-timeout',
          String(nodeTimeout),
          '--save',
          '',
          '--appendonly',
          'no',
          '--protected-mode',
          'no',
          '--repl-diskless-sync-delay',
          '0',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', (err) => (stderr += err.message));
      alive.add(child);
      procs.set(port, child);
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          await withNode(port, (r) => r.ping());
          break;
        } catch {
          if (child.exitCode !== null || Date.now() > deadline) {
            throw new Error(`redis-server on port ${port} did not start (port in use?): ${stderr.trim()}`);
          }
          await sleep(50);
        }
      }
    }
    execFileSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'], {
      stdio: 'pipe',
      timeout: 60_000,
    });
    await waitHealthy(ports, 30_000);
    await waitReplicasSynced(ports, 30_000);
  } catch (err) {
    await stop();
    throw err;
  }

  const livePorts = () =>
    ports.filter((p) => {
      const c = procs.get(p);
      return c !== undefined && c.exitCode === null && c.signalCode === null;
    });

  const topology = async () => {
    const port = livePorts()[0];
    if (port === undefined) throw new Error('no live cluster node');
    return parseNodes(await withNode(port, (r) => r.call('CLUSTER', 'NODES') as Promise<string>));
  };

  return {
    nodes: ports.map((p) => `127.0.0.1:${p}`),
    seeds: ports.map((p) => `127.0.0.1:${p}`).join(','),
    async masters() {
      return (await topology()).filter((n) => n.master && !n.failed).map((n) => n.port);
    },
    async reshard(slots) {
      const masters = (await topology()).filter((n) => n.master && !n.failed);
      const [from, to] = masters as [NodeLine, NodeLine];
      if (!from || !to) throw new Error('need two masters to reshard');
      const started = Date.now();
      await promisify(execFile)(
        'redis-cli',
        [
          '--cluster',
          'reshard',
          `127.0.0.1:${from.port}`,
          '--cluster-from',
          from.id,
          '--cluster-to',
          to.id,
          '--cluster-slots',
          String(slots),
          '--cluster-yes',
          '--cluster-pipeline',
          '5',
        ],
        { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
      );
      await waitHealthy(livePorts(), 30_000);
      return { from: from.port, to: to.port, ms: Date.now() - started };
    },
    async killMaster(opts = {}) {
      const nodes = await topology();
      const master = nodes.find((n) => n.master && !n.failed && (opts.port === undefined || n.port === opts.port));
      if (!master) throw new Error('no master to kill');
      const replica = nodes.find((n) => n.masterId === master.id && !n.failed);
      if (!replica) throw new Error(`master ${master.port} has no live replica: nothing could be promoted`);
      const child = procs.get(master.port);
      if (!child) throw new Error(`port ${master.port} is not one of ours`);
      const started = Date.now();
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
      alive.delete(child);
      // Promoted: the replica says it is a master and every live node serves all slots again.
      const deadline = Date.now() + 60_000;
      for (;;) {
        const role = await withNode(replica.port, (r) => r.call('ROLE') as Promise<unknown[]>).catch(() => null);
        if (role?.[0] === 'master') {
          try {
            await waitHealthy(livePorts(), 200);
            break;
          } catch {
            // not everywhere yet
          }
        }
        if (Date.now() > deadline) throw new Error(`replica ${replica.port} was not promoted within 60 s`);
        await sleep(50);
      }
      return { port: master.port, promoted: replica.port, failoverMs: Date.now() - started };
    },
    stop,
  };
}

async function waitHealthy(ports: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await Promise.all(ports.map((p) => withNode(p, (r) => r.call('CLUSTER', 'INFO') as Promise<string>).catch(() => '')));
    if (states.every((s) => s.includes('cluster_state:ok') && s.includes('cluster_slots_ok:16384'))) return;
    if (Date.now() > deadline) throw new Error(`cluster not healthy within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** A replica that never finished its first sync refuses to fail over: wait for every link to be up. */
async function waitReplicasSynced(ports: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const infos = await Promise.all(ports.map((p) => withNode(p, (r) => r.info('replication')).catch(() => '')));
    const replicas = infos.filter((i) => i.includes('role:slave'));
    if (replicas.length === 3 && replicas.every((i) => i.includes('master_link_status:up'))) return;
    if (Date.now() > deadline) throw new Error(`replicas not in sync within ${timeoutMs} ms`);
    await sleep(50);
  }
}
