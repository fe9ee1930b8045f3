// Service-free: the README's module table names every file under src/ and nothing that is gone,
// so a newcomer reading it finds the house as it is.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SRC = join(ROOT, 'src');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : /\.(ts|lua)$/.test(e.name) ? [relative(ROOT, join(dir, e.name))] : [],
  );
}

/** Rows of the table after "Data flows one way": first cell (module paths) -> second cell. */
function moduleTable(): { modules: string[]; text: string }[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const from = readme.indexOf('| module | what it is |');
  expect(from, 'README has the module table').toBeGreaterThan(0);
  const rows: { modules: string[]; text: string }[] = [];
  for (const line of readme.slice(from).split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    const [first = '', second = ''] = line.slice(2, -2).split(' | ');
    rows.push({ modules: [...first.matchAll(/`([^`]+)`/g)].map((m) => m[1]!.replace(/\/$/, '')), text: second });
  }
  return rows;
}

describe('README module table', () => {
  const rows = moduleTable();
  const named = rows.flatMap((r) => r.modules);

  it('names only paths that exist', () => {
    expect(named.filter((m) => !existsSync(join(ROOT, m)))).toEqual([]);
  });

  it('covers every file under src/: by its path, or by its folder row naming the file', () => {
    const missing = files(SRC).filter((f) => {
      if (named.includes(f)) return false;
      const parts = f.split('/');
      // The nearest folder with a row of its own must name the file (e.g. `store.ts`, `lua/*.lua`).
      for (let i = parts.length - 1; i >= 2; i--) {
        const folder = parts.slice(0, i).join('/');
        const row = rows.find((r) => r.modules.includes(folder));
        if (!row) continue;
        const rest = parts.slice(i).join('/');
        return !(row.text.includes(`\`${rest}\``) || (rest.endsWith('.lua') && row.text.includes('`lua/*.lua`')));
      }
      return true;
    });
    expect(missing).toEqual([]);
  });
});
