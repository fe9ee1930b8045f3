import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from './log.js';

export type Check = () => Promise<void>;

export interface OpsServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export interface ReadinessReport {
  ready: boolean;
  /** Check name -> "ok", or the reason it is not ready. */
  checks: Record<string, string>;
}

/**
 * Runs every named check at once (each gets 2 s); a check that throws makes the process not
 * ready, and its error message is the reason shown. Any component adds a reason by adding a check.
 */
export async function readinessReport(readiness: Record<string, Check>): Promise<ReadinessReport> {
  const results = await Promise.all(
    Object.entries(readiness).map(async ([name, check]) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          check(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new Error('timed out after 2000 ms')), 2_000);
          }),
        ]);
        return [name, 'ok'] as const;
      } catch (err) {
        return [name, (err as Error).message] as const;
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return { ready: results.every(([, v]) => v === 'ok'), checks: Object.fromEntries(results) };
}

/**
 * /metrics (Prometheus text), /healthz (the process answers) and /readyz (every named check
 * passes now; the failing ones are listed with their error) on a small plain HTTP server.
 */
export async function startOpsServer(options: {
  port: number;
  host?: string;
  registry: Registry;
  readiness: Record<string, Check>;
  log?: Logger;
}): Promise<OpsServer> {
  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/metrics') {
        res.writeHead(200, { 'content-type': options.registry.contentType });
        res.end(await options.registry.metrics());
      } else if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"status":"ok"}');
      } else if (path === '/readyz') {
        const report = await readinessReport(options.readiness);
        res.writeHead(report.ready ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ status: report.ready ? 'ready' : 'not ready', checks: report.checks }));
      } else {
        res.writeHead(404).end();
      }
    })().catch((err: unknown) => {
      options.log?.warn({ err: (err as Error).message }, 'ops request failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', resolve);
  });
  const address = server.address();
  return {
    server,
    port: typeof address === 'object' && address ? address.port : options.port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
