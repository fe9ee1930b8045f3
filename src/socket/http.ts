import type { IncomingMessage, ServerResponse } from 'node:http';

/** An extra HTTP route handler: true when it answered the request. */
export type HttpRoute = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}
