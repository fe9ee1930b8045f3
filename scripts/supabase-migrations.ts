/**
 * Regenerates supabase/migrations/ (Supabase CLI layout) from migrations/ (node-pg-migrate), the one
 * source of truth:
 *
 *   npm run supabase:migrations            rewrites the folder
 *   npm run supabase:migrations -- --check lists the files that differ and exits 1 (writes nothing)
 *
 * A SQL migration becomes its Up section byte for byte after a one-line header. A JS migration is run
 * against a stand-in `pgm` on an empty, unpartitioned database (its `select`s return no rows) and its
 * statements are written without CONCURRENTLY: the Supabase CLI runs every file in a transaction.
 * test/supabase-folder.test.ts fails when the folder is not this script's output.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const source = `${root}migrations/`;
const target = `${root}supabase/migrations/`;

/** node-pg-migrate versions 1764000000000+n become Supabase CLI versions 20251124160000+n (14 digits). */
const FIRST_VERSION = 1_764_000_000_000n;
const SUPABASE_FIRST_VERSION = 20_251_124_160_000n;

/**
 * What a transaction costs on Supabase, per JS migration: lines between the header and the list of
 * CONCURRENTLY statements a DBA can run by hand first, then the line after that list.
 */
const notes: Record<string, { before: string[]; after: string }> = {
  '1764000000001_chat-rooms-indexes.js': {
    before: [
      'The Supabase CLI runs each migration file in a transaction, where CREATE INDEX CONCURRENTLY is not',
      'allowed, so the indexes are built plainly here: that takes a SHARE lock on chat_rooms (writes wait)',
      'for the build. On a large live table, build them first by hand, outside a transaction:',
    ],
    after: 'and this file then does nothing (IF NOT EXISTS).',
  },
  '1764000000008_log-maintenance-plans.js': {
    before: [
      'The Supabase CLI runs each migration file in a transaction, where CREATE INDEX CONCURRENTLY is not',
      'allowed, so the created_at index is built plainly here: that takes a SHARE lock on unread_sync.changes',
      "(the app's writes to chat_rooms wait) for the build. On a large log, build it first by hand, outside a",
      'transaction:',
    ],
    after: 'and this file then skips it (IF NOT EXISTS). The why of every function is in the .js migration.',
  },
};
const defaultNote = {
  before: [
    'The Supabase CLI runs each migration file in a transaction, where CONCURRENTLY is not allowed, so',
    'these statements run plainly here (with the stronger lock). On a large table, run them first by hand:',
  ],
  after: 'and this file then skips them (IF NOT EXISTS).',
};

function supabaseName(file: string): string {
  const [, number, name] = /^(\d+)_(.+)\.(sql|js)$/.exec(file) ?? [];
  if (number === undefined || name === undefined) throw new Error(`not a migration file name: ${file}`);
  const version = SUPABASE_FIRST_VERSION + (BigInt(number) - FIRST_VERSION);
  return `${version}_${name}.sql`;
}

function upSection(file: string, text: string): string {
  const start = text.indexOf('-- Up Migration\n');
  const end = text.indexOf('-- Down Migration');
  if (start < 0 || end < 0) throw new Error(`${file} is not a node-pg-migrate SQL migration`);
  return text.slice(start + '-- Up Migration\n'.length, end);
}

interface JsMigration {
  up: (pgm: unknown) => Promise<void> | void;
}

async function renderJs(file: string): Promise<string> {
  const mod = (await import(pathToFileURL(source + file).href)) as JsMigration;
  const ran: string[] = [];
  await mod.up({ noTransaction: () => {}, db: { select: async () => [] }, sql: (s: string) => ran.push(s) });
  const note = notes[file] ?? defaultNote;
  const byHand = ran.filter((s) => s.includes(' CONCURRENTLY') && !/^DROP /.test(s)).map((s) => `--   ${s};`);
  const header = [
    `-- Supabase copy of migrations/${file} (test/supabase-folder.test.ts checks it).`,
    ...note.before.map((l) => `-- ${l}`),
    ...byHand,
    `-- ${note.after}`,
  ];
  // One-line statements stay together; a blank line sets off every multi-line one.
  let body = '';
  ran.forEach((s, i) => {
    const statement = `${s.replace(/ CONCURRENTLY/g, '')};\n`;
    const previous = ran[i - 1];
    if (previous !== undefined && (previous.includes('\n') || s.includes('\n'))) body += '\n';
    body += statement;
  });
  return `${header.join('\n')}\n${body}`;
}

/** The folder's expected content: Supabase file name -> text. */
export async function render(): Promise<Map<string, string>> {
  const files = readdirSync(source)
    .filter((f) => /^\d+_.+\.(sql|js)$/.test(f))
    .sort();
  const out = new Map<string, string>();
  for (const file of files) {
    const text = file.endsWith('.sql')
      ? `-- Up section of migrations/${file}, byte for byte (test/supabase-folder.test.ts checks it).\n${upSection(file, readFileSync(source + file, 'utf8'))}`
      : await renderJs(file);
    out.set(supabaseName(file), text);
  }
  return out;
}

/** Files of the folder that are missing, differ, or have no source. */
export async function differences(): Promise<string[]> {
  const expected = await render();
  const present = readdirSync(target).filter((f) => f.endsWith('.sql'));
  const stale = present.filter((f) => !expected.has(f));
  const wrong = [...expected].filter(([f, text]) => !present.includes(f) || readFileSync(target + f, 'utf8') !== text).map(([f]) => f);
  return [...wrong, ...stale].sort();
}

async function main(): Promise<void> {
  if (process.argv.includes('--check')) {
    const bad = await differences();
    if (bad.length === 0) return;
    console.error(`supabase/migrations/ is out of date (run npm run supabase:migrations):\n  ${bad.join('\n  ')}`);
    process.exitCode = 1;
    return;
  }
  const expected = await render();
  for (const f of readdirSync(target).filter((x) => x.endsWith('.sql') && !expected.has(x))) {
    throw new Error(`supabase/migrations/${f} has no source in migrations/: remove it by hand if that is intended`);
  }
  for (const [f, text] of expected) writeFileSync(target + f, text);
  console.log(`wrote ${expected.size} files to supabase/migrations/`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
