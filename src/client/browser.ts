// Entry of the <script> build (dist/browser/unread-sync-client.js): exposes the client as `UnreadSync`.
import * as client from './index.js';

(globalThis as { UnreadSync?: typeof client }).UnreadSync = client;
