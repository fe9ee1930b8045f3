// Bundles `unread-sync/client` (with socket.io-client) and the demo page's script for browsers.
// platform 'browser' fails the build on any Node built-in, which keeps src/client portable.
import { build } from 'esbuild';

export async function bundleClient(outdir = 'dist/browser') {
  await build({
    entryPoints: {
      'unread-sync-client': 'src/client/browser.ts',
      'demo-app': 'src/demo/app.ts',
    },
    outdir,
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: ['es2020'],
    minify: true,
    sourcemap: true,
    legalComments: 'linked',
    logLevel: 'warning',
  });
}

if (import.meta.url === `file://${process.argv[1]}`) await bundleClient();
