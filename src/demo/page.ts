import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';

// The demo page: static HTML, a served stylesheet and the bundled script (client library + the
// page's own code, built by scripts/bundle-client.mjs). Nothing inline, so the CSP needs no
// 'unsafe-inline' for scripts or styles.
export const DEMO_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'";

export const DEMO_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>unread-sync demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1, viewport-fit=cover">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/demo/app.css">
<script defer src="/demo/app.js"></script>
</head>
<body>
<main class="app">
  <header class="topbar">
    <div class="title">
      <h1>Chats</h1>
      <span id="badge" class="badge zero" data-testid="badge" aria-label="unread messages">–</span>
    </div>
    <select id="user" class="who" data-testid="user-select" aria-label="Signed in as"></select>
  </header>
  <div class="subbar">
    <div>
      <div id="status" class="status wait" data-testid="status">connecting…</div>
      <div id="rooms-count" class="muted" data-testid="unread-rooms"></div>
    </div>
    <button id="read-all" type="button" class="btn" data-testid="mark-all-read">Mark all read</button>
  </div>
  <ul id="rooms" class="rooms" aria-label="Chats"></ul>
  <p class="foot">Live through <code>unread-sync/client</code>: Postgres → bridge → Redis → Socket.IO.</p>
</main>
</body>
</html>
`;

export const DEMO_CSS = `:root { color-scheme: light; --accent: #2563eb; --badge: #ef4444; --line: #eceef2; --muted: #6b7280; }
* { box-sizing: border-box; }
html, body { margin: 0; background: #f3f4f6; }
body { font: 15px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #111827; -webkit-font-smoothing: antialiased; }
.app { max-width: 480px; margin: 0 auto; min-height: 100vh; background: #fff; box-shadow: 0 0 0 1px var(--line); }
.topbar { position: sticky; top: 0; z-index: 1; display: flex; align-items: center; justify-content: space-between; gap: 12px;
  padding: 14px 16px 10px; background: rgba(255,255,255,.96); border-bottom: 1px solid var(--line); }
.title { display: flex; align-items: center; gap: 8px; }
h1 { margin: 0; font-size: 26px; font-weight: 800; letter-spacing: -.02em; }
.badge { display: inline-flex; align-items: center; justify-content: center; min-width: 24px; height: 24px; padding: 0 8px;
  border-radius: 999px; background: var(--badge); color: #fff; font-size: 13px; font-weight: 700; font-variant-numeric: tabular-nums; }
.badge.zero { background: #d1d5db; color: #374151; }
.who { max-width: 48%; font: inherit; font-size: 14px; padding: 6px 28px 6px 10px; border: 1px solid var(--line); border-radius: 999px;
  background: #f9fafb; color: #111827; }
.subbar { display: flex; align-items: center; justify-content: space-between; gap: 12px; padding: 10px 16px; border-bottom: 1px solid var(--line); }
.status { font-size: 13px; font-weight: 600; }
.status::before { content: ""; display: inline-block; width: 8px; height: 8px; margin-right: 6px; border-radius: 50%; vertical-align: 1px; background: currentColor; }
.status.ok { color: #059669; } .status.wait { color: #d97706; } .status.error { color: #dc2626; }
.muted { color: var(--muted); font-size: 13px; margin-top: 2px; }
.rooms { list-style: none; margin: 0; padding: 0; }
.room { display: flex; gap: 10px; padding: 12px 14px; border-bottom: 1px solid var(--line); }
.room.unread { background: #f8faff; }
.avatar { flex: none; width: 44px; height: 44px; border-radius: 50%; display: flex; align-items: center; justify-content: center;
  color: #fff; font-weight: 700; font-size: 17px; }
.av-0 { background: #6366f1; } .av-1 { background: #0ea5e9; } .av-2 { background: #f59e0b; }
.av-3 { background: #10b981; } .av-4 { background: #ec4899; } .av-5 { background: #8b5cf6; }
.body { flex: 1; min-width: 0; }
.line { display: flex; align-items: center; justify-content: space-between; gap: 8px; }
.name { font-weight: 600; font-size: 16px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.room.unread .name { font-weight: 800; }
.count { flex: none; min-width: 22px; height: 22px; padding: 0 7px; border-radius: 999px; background: var(--accent); color: #fff;
  font-size: 12px; font-weight: 700; display: inline-flex; align-items: center; justify-content: center; font-variant-numeric: tabular-nums; }
.count.zero { visibility: hidden; }
.preview { color: var(--muted); font-size: 14px; margin-top: 2px; }
.room.unread .preview { color: #111827; font-weight: 600; }
.actions { display: flex; flex-wrap: wrap; gap: 5px; margin-top: 8px; }
.btn { font: inherit; font-size: 12px; font-weight: 600; padding: 5px 9px; border-radius: 999px; border: 1px solid #d1d5db;
  background: #fff; color: #1f2937; cursor: pointer; white-space: nowrap; }
.btn:hover { background: #f3f4f6; } .btn:active { transform: translateY(1px); }
.btn.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
.foot { color: var(--muted); font-size: 12px; text-align: center; padding: 16px; margin: 0; }
code { font-size: 11.5px; background: #f3f4f6; padding: 1px 4px; border-radius: 4px; }
`;

const bundleCache = new Map<string, Buffer>();

/** The bundled script: beside the compiled module in dist, or the build output when running from src. */
function bundle(name: string): Buffer | null {
  const cached = bundleCache.get(name);
  if (cached) return cached;
  for (const candidate of [`../browser/${name}`, `../../dist/browser/${name}`]) {
    try {
      const data = readFileSync(new URL(candidate, import.meta.url));
      bundleCache.set(name, data);
      return data;
    } catch {
      // try the next location
    }
  }
  return null;
}

/** Forgets cached bundles (tests rebuild them). */
export function clearDemoBundleCache(): void {
  bundleCache.clear();
}

/** Serves /demo/app.css and /demo/app.js (+ its source map); false for any other request. */
export function serveDemoAsset(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method !== 'GET') return false;
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  if (path === '/demo/app.css') {
    res.writeHead(200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'no-cache' });
    res.end(DEMO_CSS);
    return true;
  }
  const file = path === '/demo/app.js' ? 'demo-app.js' : path === '/demo/app.js.map' ? 'demo-app.js.map' : null;
  if (!file) return false;
  const data = bundle(file);
  if (!data) {
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('demo bundle missing: run `npm run build`');
    return true;
  }
  res.writeHead(200, {
    'content-type': `${file.endsWith('.map') ? 'application/json' : 'text/javascript'}; charset=utf-8`,
    'cache-control': 'no-cache',
  });
  res.end(data);
  return true;
}
