/**
 * Socket capacity: what one socket-server process holds, measured, not assumed.
 *
 *   npm run bench:sockets -- [--quick] [--steps 1000,10000,max,50000] [--rates 1000] [--load 20]
 *                            [--idle 25] [--per-worker 10000] [--per-server 17000] [--connect-seconds 300]
 *                            [--out f.json]
 *
 * The real socket server (startSocketServer, as `unread-sync serve` runs it, production defaults)
 * runs in a child process; clients are socket.io-client sockets (websocket transport only, one per
 * user, each with its own HS256 JWT, verified by the server as in production) spread over worker
 * processes, each worker on its own source address 127.0.0.(2+w) so that ephemeral ports never run
 * out. Users are hydrated into Redis and badge changes are applied through UnreadStore.apply: the
 * bridge's own Lua script, which writes the user's hash and SPUBLISHes the new total on the user's
 * shard channel; the socket server receives it on its SSUBSCRIBE and emits. (The database and the
 * bridge are left out on purpose: at 1,000 commits/s they would compete for the same 2 cores and
 * are measured by `npm run bench`; this measures the socket server.)
 *
 * Per step (sockets connected so far, growing): memory of the server after a full GC minus its
 * memory before any client (RSS and V8 heap) per socket; idle CPU of the server over a window
 * with nothing changing (socket.io pings and the 5 s reconcile of connected users included);
 * emit latency = store.apply called -> total-unread-count-updated received by the client, with
 * `rate` changes/s spread round-robin over all connected users. Clocks: CLOCK_MONOTONIC
 * (process.hrtime), the same in every process on the machine.
 *
 * Step `max` fills the first server to its open-files limit (and a little past it, to see what
 * happens there); a step larger than one process can hold adds server processes (`--per-server`
 * sockets each) next to it. Uses TEST_REDIS_URL (default redis://127.0.0.1:6379) and a key prefix
 * of its own, deleted at the end; no database.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { UnreadStore, type RoomChange } from '../src/store/store.js';
import { fmt, markdownTable, pct, sleep } from './lib.js';
import type { ServerMessage, ServerStats } from './socket-capacity-server.js';
import type { WorkerReply, WorkerRequest } from './socket-capacity-client.js';
import { deletePrefix } from '../test/support/redis-keys.js';

export interface CapacityOptions {
  /** Socket counts to reach, ascending; 'max' = the first server's open-files limit. */
  steps: Array<number | 'max'>;
  /** Badge changes per second of the load windows, one window per rate at every step. */
  rates: number[];
  loadSeconds: number;
  idleSeconds: number;
  perWorker: number;
  /** Sockets per server process once one process is not enough. */
  perServer: number;
  /** Longest a step may spend connecting (s); what is connected by then is measured. */
  connectSeconds: number;
  redisUrl: string;
  log?: (line: string) => void;
}

export interface CapacityStep {
  step: string;
  servers: number;
  sockets: number;
  socketsPerServer: number[];
  /** Sockets and users each server itself reports (engine clients, subscribed users). */
  serverSockets: number[];
  serverUsers: number[];
  /** Connection attempts that failed while reaching this step, by error. */
  failed: number;
  /** Connections not attempted because the step ran out of connectSeconds. */
  notTried: number;
  errors: Record<string, number>;
  connectPerSecond: number;
  /** Sum over the server processes. */
  rssMB: number;
  rssKBPerSocket: number;
  heapKBPerSocket: number;
  /** Open descriptors of each server / its limit. */
  fds: number[];
  fdLimit: number;
  /** % of one core, summed over the server processes. */
  idleCpuPct: number;
  /** Machine load average (1 min) before the idle window. */
  loadavg: number;
  loads: LoadResult[];
  clientDisconnects: number;
  clientRssMB: number;
}

export interface LoadResult {
  rate: number;
  changesPerSecond: number;
  /** Over the load window plus the 2 s after it (until delivery ends). */
  cpuPct: number;
  /** Server CPU above idle per change (ms), summed over the servers: what a change costs, whatever the machine's load. */
  cpuMsPerChange: number;
  /** Machine load average (1 min) after the window. */
  loadavg: number;
  /** store.apply called -> total-unread-count-updated received by the client. */
  emits: { count: number; p50: number; p90: number; p99: number; max: number; undelivered: number };
  /** store.apply called -> SPUBLISH received by a plain subscriber (up to 200 sampled users): Redis's share of the latency. */
  redisPublish: { count: number; p50: number; p99: number };
}

export interface CapacityResult {
  at: string;
  rates: number[];
  loadSeconds: number;
  idleSeconds: number;
  cores: number;
  loadavgAtStart: number[];
  fdLimit: { soft: number; hard: number };
  steps: CapacityStep[];
  /** What kept a step from more sockets (open-files limit, connect time). */
  stoppedBy: string[];
}

const here = (f: string) => fileURLToPath(new URL(f, import.meta.url));
const clock = () => Number(process.hrtime.bigint() / 1000n) / 1000;

interface ServerProc {
  child: ChildProcess;
  url: string;
  pid: number;
  base: ServerStats;
  sockets: number;
  stats(gc: boolean): Promise<ServerStats>;
}

interface WorkerProc {
  child: ChildProcess;
  used: number;
  request<T extends WorkerReply['type']>(m: WorkerRequest, reply: T): Promise<Extract<WorkerReply, { type: T }>>;
}

/** Replies of a child, in order, per message type. */
function mailbox<M extends { type: string }>(child: ChildProcess) {
  const waiting = new Map<string, Array<(m: M) => void>>();
  child.on('message', (m: M) => waiting.get(m.type)?.shift()?.(m));
  return <T extends M['type']>(type: T): Promise<Extract<M, { type: T }>> =>
    new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`child ${child.pid} exited (${code}) while waiting for ${type}`));
      child.once('exit', onExit);
      const list = waiting.get(type) ?? [];
      list.push((m) => {
        child.off('exit', onExit);
        resolve(m as Extract<M, { type: T }>);
      });
      waiting.set(type, list);
    });
}

function openFilesLimit(pid: number | 'self'): { soft: number; hard: number } {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('Max open files'));
  const [soft, hard] = (line ?? '').split(/\s+/).slice(3, 5).map(Number);
  return { soft: soft ?? NaN, hard: hard ?? NaN };
}

/** Resident set of a process in bytes, read from outside (the process may have no descriptor left). */
function vmRss(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const fdCount = (pid: number): number => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
};

export async function runSocketCapacity(o: CapacityOptions): Promise<CapacityResult> {
  const log = o.log ?? ((l: string) => console.log(l));
  const prefix = `cap${randomBytes(4).toString('hex')}:`;
  const secret = randomBytes(32).toString('hex');
  const redis = new Redis(o.redisUrl, { enableAutoPipelining: true });
  const store = new UnreadStore(redis, prefix);
  const servers: ServerProc[] = [];
  const workers: WorkerProc[] = [];
  const limit = openFilesLimit('self');
  const result: CapacityResult = {
    at: new Date().toISOString(),
    rates: o.rates,
    loadSeconds: o.loadSeconds,
    idleSeconds: o.idleSeconds,
    cores: (await import('node:os')).cpus().length,
    loadavgAtStart: loadavg().map((v) => Number(v.toFixed(2))),
    fdLimit: limit,
    steps: [],
    stoppedBy: [],
  };

  const maxTarget = (limit.soft || 20_000) + 100;
  const biggest = Math.max(...o.steps.map((s) => (s === 'max' ? maxTarget : s)));
  // One room per user with 1 unread to start with; changes then count it up.
  // Slack for attempts that fail at the limit (their users are not reused).
  const userCount = biggest + 1_000;
  const users = Array.from({ length: userCount }, () => randomUUID());
  const counts = new Int32Array(userCount).fill(1);
  let version = 1;

  async function startServer(): Promise<ServerProc> {
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', here('./socket-capacity-server.ts')], {
      env: {
        ...process.env,
        PORT: '0',
        HOST: '127.0.0.1',
        REDIS_URL: o.redisUrl,
        UNREAD_KEY_PREFIX: prefix,
        SUPABASE_JWT_SECRET: secret,
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const next = mailbox<ServerMessage>(child);
    const listening = await next('listening');
    const stats = async (gc: boolean) => {
      const reply = next('stats');
      child.send({ type: 'stats', gc });
      const { type: _t, ...s } = await reply;
      return { ...s, rss: vmRss(listening.pid) };
    };
    await sleep(500);
    const base = await stats(true);
    const s: ServerProc = { child, url: listening.url, pid: listening.pid, base, sockets: 0, stats };
    servers.push(s);
    log(
      `server ${servers.length}: pid ${s.pid} ${s.url}, RSS ${fmt(base.rss / 2 ** 20, 1)} MB, heap ${fmt(base.heapUsed / 2 ** 20, 1)} MB before any client`,
    );
    return s;
  }

  async function startWorker(): Promise<WorkerProc> {
    const address = `127.0.0.${2 + workers.length}`;
    const child = spawn(process.execPath, ['--import', 'tsx', here('./socket-capacity-client.ts')], {
      env: { ...process.env, CAPACITY_LOCAL_ADDRESS: address },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const next = mailbox<WorkerReply>(child);
    await next('ready');
    const w: WorkerProc = {
      child,
      used: 0,
      request: (m, reply) => {
        const r = next(reply);
        child.send(m);
        return r;
      },
    };
    workers.push(w);
    return w;
  }

  let nextUser = 0;
  const connected: number[] = [];

  /** Opens `count` more sockets to `server`, filling workers up to perWorker each. */
  async function connect(server: ServerProc, count: number, deadline: number) {
    const jobs: Array<Promise<Extract<WorkerReply, { type: 'connected' }>>> = [];
    let left = Math.min(count, users.length - nextUser);
    while (left > 0) {
      const w = workers.find((x) => x.used < o.perWorker) ?? (await startWorker());
      const n = Math.min(left, o.perWorker - w.used);
      w.used += n;
      jobs.push(
        w.request(
          {
            type: 'connect',
            url: server.url,
            secret,
            offset: nextUser,
            users: users.slice(nextUser, nextUser + n),
            concurrency: 64,
            timeoutMs: 15_000,
            deadline,
          },
          'connected',
        ),
      );
      nextUser += n;
      left -= n;
    }
    const replies = await Promise.all(jobs);
    const errors: Record<string, number> = {};
    let failed = 0;
    let notTried = 0;
    for (const r of replies) {
      notTried += r.notTried;
      for (const i of r.ok) connected.push(i);
      server.sockets += r.ok.length;
      failed += r.failed;
      for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    }
    return { failed, notTried, errors };
  }

  const cpuPct = (a: ServerStats, b: ServerStats) =>
    (100 * (b.cpuUserUs + b.cpuSystemUs - a.cpuUserUs - a.cpuSystemUs)) / 1000 / (b.at - a.at);

  async function measure(
    label: string,
    failed: number,
    notTried: number,
    errors: Record<string, number>,
    connectMs: number,
    added: number,
  ): Promise<CapacityStep> {
    await sleep(3_000); // let connection set-up (room reads, joins) finish
    const mem = await Promise.all(servers.map((s) => s.stats(true)));
    const sockets = servers.reduce((a, s) => a + s.sockets, 0);
    const rss = mem.reduce((a, m) => a + m.rss, 0);
    const rssDelta = mem.reduce((a, m, i) => a + m.rss - (servers[i] as ServerProc).base.rss, 0);
    const heapDelta = mem.reduce((a, m, i) => a + m.heapUsed - (servers[i] as ServerProc).base.heapUsed, 0);
    const fds = servers.map((s) => fdCount(s.pid));
    log(
      `${label}: ${sockets} sockets on ${servers.length} server(s) (${failed} failed), RSS ${fmt(rss / 2 ** 20, 0)} MB; idle ${o.idleSeconds} s...`,
    );

    const load1 = loadavg()[0] as number;
    const idleA = await Promise.all(servers.map((s) => s.stats(false)));
    await sleep(o.idleSeconds * 1000);
    const idleB = await Promise.all(servers.map((s) => s.stats(false)));
    const idleCpu = idleA.reduce((a, x, i) => a + cpuPct(x, idleB[i] as ServerStats), 0);
    const loads: LoadResult[] = [];
    let samples: Array<Extract<WorkerReply, { type: 'samples' }>> = [];
    for (const rate of o.rates) {
      const r = await load(label, rate, idleCpu);
      loads.push(r.result);
      samples = r.samples;
    }
    const step: CapacityStep = {
      step: label,
      servers: servers.length,
      sockets,
      socketsPerServer: servers.map((s) => s.sockets),
      serverSockets: mem.map((m) => m.sockets),
      serverUsers: mem.map((m) => m.users),
      failed,
      notTried,
      errors,
      connectPerSecond: Math.round((added * 1000) / connectMs),
      rssMB: Number((rss / 2 ** 20).toFixed(1)),
      rssKBPerSocket: Number((rssDelta / 1024 / sockets).toFixed(1)),
      heapKBPerSocket: Number((heapDelta / 1024 / sockets).toFixed(1)),
      fds,
      fdLimit: openFilesLimit((servers[0] as ServerProc).pid).soft,
      idleCpuPct: Number(idleCpu.toFixed(1)),
      loadavg: Number(load1.toFixed(2)),
      loads,
      clientDisconnects: samples.reduce((a, s) => a + s.disconnects, 0),
      clientRssMB: Number((samples.reduce((a, s) => a + s.rss, 0) / 2 ** 20).toFixed(0)),
    };
    log(JSON.stringify(step));
    return step;
  }

  /**
   * `rate` changes/s for loadSeconds, round-robin over every connected user, a few per apply call
   * (as the bridge batches a cycle); the send time is taken before the call.
   */
  async function load(label: string, rate: number, idleCpu: number) {
    log(`${label}: ${rate} changes/s for ${o.loadSeconds} s...`);
    await Promise.all(workers.map((w) => w.child.send({ type: 'record', on: true } satisfies WorkerRequest)));
    // A plain subscriber on a sample of users' channels: the part of the latency that is Redis's.
    const probe = new Redis(o.redisUrl);
    const sample = new Map<string, number>();
    for (let k = 0; k < Math.min(200, connected.length); k++) {
      const i = connected[Math.floor((k * connected.length) / Math.min(200, connected.length))] as number;
      sample.set(store.keys.channel(users[i] as string), i);
    }
    const probeAt = new Map<number, Array<[number, number]>>();
    probe.on('smessage', (channel: string, message: string) => {
      const i = sample.get(channel);
      const total = Number(message.split(' ')[0]);
      if (i === undefined || !Number.isFinite(total)) return;
      const list = probeAt.get(i) ?? [];
      list.push([total, clock()]);
      probeAt.set(i, list);
    });
    for (const ch of sample.keys()) await probe.ssubscribe(ch);
    await sleep(200);
    const sentIdx: number[] = [];
    const sentTotal: number[] = [];
    const sentAt: number[] = [];
    const loadA = await Promise.all(servers.map((s) => s.stats(false)));
    const start = clock();
    const total = Math.round(rate * o.loadSeconds);
    let sent = 0;
    let rr = Math.floor(Math.random() * connected.length);
    const calls: Array<Promise<unknown>> = [];
    while (sent < total) {
      const due = Math.min(total, Math.floor(((clock() - start) * rate) / 1000)) - sent;
      if (due <= 0) {
        await sleep(1);
        continue;
      }
      const batch = new Map<string, RoomChange[]>();
      const t = clock();
      for (let k = 0; k < Math.min(due, 64); k++) {
        const i = connected[rr++ % connected.length] as number;
        if (batch.has(users[i] as string)) break;
        counts[i] = (counts[i] as number) + 1;
        batch.set(users[i] as string, [{ roomId: 'r1', unread: counts[i] as number, version: String(++version) }]);
        sentIdx.push(i);
        sentTotal.push(counts[i] as number);
        sentAt.push(t);
        sent++;
      }
      calls.push(store.apply(batch));
    }
    await Promise.all(calls);
    const achieved = (sent * 1000) / (clock() - start);
    await sleep(2_000);
    const loadB = await Promise.all(servers.map((s) => s.stats(false)));
    const loadCpu = loadA.reduce((a, x, i) => a + cpuPct(x, loadB[i] as ServerStats), 0);
    const window = (loadB[0] as ServerStats).at - (loadA[0] as ServerStats).at;
    const cpuMsPerChange = (((loadCpu - idleCpu) / 100) * window) / sent;
    const load2 = loadavg()[0] as number;
    probe.disconnect();
    await Promise.all(workers.map((w) => w.child.send({ type: 'record', on: false } satisfies WorkerRequest)));
    const samples = await Promise.all(workers.map((w) => w.request({ type: 'collect' }, 'samples')));

    // First arrival of a total >= the one sent, per change (totals only grow).
    const firstAt = new Map<number, Array<[number, number]>>();
    for (const s of samples) {
      for (let k = 0; k < s.idx.length; k++) {
        const list = firstAt.get(s.idx[k] as number) ?? [];
        list.push([s.total[k] as number, s.at[k] as number]);
        firstAt.set(s.idx[k] as number, list);
      }
    }
    const join = (arrivals: Map<number, Array<[number, number]>>, only?: Map<string, number>) => {
      const lat: number[] = [];
      let undelivered = 0;
      const wanted = only ? new Set(only.values()) : null;
      for (let k = 0; k < sentIdx.length; k++) {
        if (wanted && !wanted.has(sentIdx[k] as number)) continue;
        let best = Infinity;
        for (const [tot, at] of arrivals.get(sentIdx[k] as number) ?? []) if (tot >= (sentTotal[k] as number) && at < best) best = at;
        if (best === Infinity) undelivered++;
        else lat.push(best - (sentAt[k] as number));
      }
      return { sorted: Float64Array.from(lat).sort(), undelivered };
    };
    const { sorted, undelivered } = join(firstAt);
    const viaRedis = join(probeAt, sample).sorted;
    const result: LoadResult = {
      rate,
      changesPerSecond: Math.round(achieved),
      cpuPct: Number(loadCpu.toFixed(1)),
      cpuMsPerChange: Number(cpuMsPerChange.toFixed(3)),
      loadavg: Number(load2.toFixed(2)),
      emits: {
        count: sorted.length,
        p50: Number(pct(sorted, 50).toFixed(2)),
        p90: Number(pct(sorted, 90).toFixed(2)),
        p99: Number(pct(sorted, 99).toFixed(2)),
        max: Number(pct(sorted, 100).toFixed(2)),
        undelivered,
      },
      redisPublish: { count: viaRedis.length, p50: Number(pct(viaRedis, 50).toFixed(2)), p99: Number(pct(viaRedis, 99).toFixed(2)) },
    };
    log(`${label} @ ${rate}/s: ${JSON.stringify(result)}`);
    return { result, samples };
  }

  const cleanup = async () => {
    await Promise.all(
      workers.map((w) => (w.child.exitCode === null ? w.request({ type: 'close' }, 'closed').catch(() => undefined) : undefined)),
    );
    for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGTERM');
    await Promise.all(
      servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.child.exitCode !== null) return resolve();
            s.child.once('exit', () => resolve());
            s.child.kill('SIGTERM');
          }),
      ),
    );
    await deletePrefix(redis, prefix);
    redis.disconnect();
  };

  // Interrupted: still release every socket, process and key.
  const interrupted = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    log(`hydrating ${userCount} users into Redis (prefix ${prefix})...`);
    for (let i = 0; i < users.length; i += 1_000) {
      await store.hydrate(new Map(users.slice(i, i + 1_000).map((u) => [u, [{ roomId: 'r1', unread: 1 }]])));
    }
    const first = await startServer();
    for (const s of o.steps) {
      const label = s === 'max' ? 'max (one process)' : String(s);
      const started = clock();
      let failed = 0;
      let notTried = 0;
      const errors: Record<string, number> = {};
      const before = connected.length;
      const deadline = started + o.connectSeconds * 1000;
      const add = (r: { failed: number; notTried: number; errors: Record<string, number> }) => {
        failed += r.failed;
        notTried += r.notTried;
        for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
      };
      if (s === 'max') {
        log(
          `max: filling server 1 to its open-files limit (${openFilesLimit(first.pid).soft}) and ${maxTarget - openFilesLimit(first.pid).soft} past it...`,
        );
        add(await connect(first, maxTarget - first.sockets, deadline));
        result.stoppedBy.push(
          `server open-files limit ${openFilesLimit(first.pid).soft} (hard ${openFilesLimit(first.pid).hard}); first server holds ${first.sockets} sockets with ${fdCount(first.pid)} descriptors open`,
        );
      } else {
        let want = s - connected.length;
        // Each server takes up to perServer sockets (below its open-files limit); beyond that, more processes.
        const room = (srv: ServerProc) => Math.max(0, o.perServer - srv.sockets);
        for (const srv of servers) {
          if (want <= 0) break;
          const n = Math.min(want, room(srv));
          if (n > 0) {
            add(await connect(srv, n, deadline));
            want = s - connected.length;
          }
        }
        while (want > 0 && clock() < deadline) {
          const extra = Math.ceil(want / Math.ceil(want / o.perServer));
          const srv = await startServer();
          add(await connect(srv, extra, deadline));
          want = s - connected.length;
          if (srv.sockets === 0) break;
        }
      }
      log(`${label}: connected ${connected.length - before} in ${fmt((clock() - started) / 1000, 1)} s`);
      if (notTried > 0) {
        result.stoppedBy.push(
          `${label}: connecting ran out of its ${o.connectSeconds} s (${notTried} sockets not tried, ${failed} failed); ${connected.length} connected`,
        );
      }
      result.steps.push(await measure(label, failed, notTried, errors, clock() - started, connected.length - before));
    }
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    await cleanup();
  }
  return result;
}

export function capacityTable(r: CapacityResult): string {
  const rows: string[][] = [];
  for (const s of r.steps) {
    s.loads.forEach((l, k) => {
      const first = k === 0;
      rows.push([
        first
          ? `${s.sockets.toLocaleString('en-US')}${s.servers > 1 ? ` (${s.servers} processes: ${s.socketsPerServer.map((n) => n.toLocaleString('en-US')).join(' + ')})` : ''}`
          : '',
        first ? `${fmt(s.rssMB, 0)} MB` : '',
        first ? `${fmt(s.rssKBPerSocket, 1)} KB` : '',
        first ? `${fmt(s.heapKBPerSocket, 1)} KB` : '',
        first ? `${fmt(s.idleCpuPct, 1)} %` : '',
        `${l.rate.toLocaleString('en-US')}/s`,
        `${fmt(l.cpuPct, 0)} %`,
        `${fmt(l.cpuMsPerChange * 1000, 0)} µs`,
        `${fmt(l.emits.p50, 2)} / ${fmt(l.emits.p99, 1)} / ${fmt(l.emits.max, 0)} ms`,
        `${fmt(l.redisPublish.p50, 2)} / ${fmt(l.redisPublish.p99, 1)} ms`,
        String(l.emits.undelivered),
        `${fmt(first ? s.loadavg : l.loadavg, 1)}`,
      ]);
    });
  }
  return markdownTable(
    [
      'sockets',
      'server RSS',
      'RSS / socket',
      'heap / socket',
      'idle CPU',
      'changes',
      'server CPU',
      'CPU / change',
      'emit p50 / p99 / max',
      'Redis publish p50 / p99',
      'undelivered',
      'load avg',
    ],
    rows,
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const quick = argv.includes('--quick');
  const steps = (get('steps') ?? (quick ? '300' : '1000,10000,max,50000')).split(',').map((s) => (s === 'max' ? 'max' : Number(s)));
  if (steps.some((s) => s !== 'max' && !(Number.isSafeInteger(s) && s > 0)))
    throw new Error('--steps takes positive integers or max, comma-separated');
  const result = await runSocketCapacity({
    steps: steps as Array<number | 'max'>,
    rates: (get('rates') ?? (quick ? '200' : '1000')).split(',').map(Number),
    loadSeconds: Number(get('load') ?? (quick ? 5 : 20)),
    idleSeconds: Number(get('idle') ?? (quick ? 5 : 25)),
    perWorker: Number(get('per-worker') ?? 10_000),
    perServer: Number(get('per-server') ?? 17_000),
    connectSeconds: Number(get('connect-seconds') ?? 300),
    redisUrl: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379',
  });
  console.log(`\n${capacityTable(result)}`);
  for (const why of result.stoppedBy) console.log(`\nstopped by: ${why}`);
  const out = get('out');
  if (out) writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.exit(0);
}
