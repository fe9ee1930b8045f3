// Service-free: the layers of src/ point one way. Walks the relative runtime imports of every
// module (`import type` and `export type` are erased, so they are skipped) and fails with the chain
// that breaks a rule.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = fileURLToPath(new URL('../src/', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : /\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
  );
}

/** Module (path relative to src/, e.g. "socket/server.ts") -> the modules it imports at runtime. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8');
    const deps: string[] = [];
    // import ... from '...', export ... from '...', import '...' (side effect) and import('...').
    const re =
      /(?:^|\n)\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]|(?:^|\n)\s*import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
    for (const m of text.matchAll(re)) {
      if (m[2]) continue; // import type / export type
      // `import { type A, type B } from` is erased too when every name is a type.
      const names = m[3]?.trim();
      if (
        names &&
        /^\{[^}]*\}$/.test(names) &&
        names
          .slice(1, -1)
          .split(',')
          .every((n) => n.trim() === '' || /^type\s/.test(n.trim()))
      )
        continue;
      const spec = m[4] ?? m[5] ?? m[6];
      if (!spec?.startsWith('.')) continue;
      const target = resolve(dirname(file), spec).replace(/\.js$/, '.ts');
      deps.push(relative(SRC, target));
    }
    graph.set(relative(SRC, file), deps);
  }
  return graph;
}

const graph = importGraph();

/** First chain from `from` to a module matching `bad` (breadth-first: the shortest), or null. */
function chainTo(from: string, bad: (m: string) => boolean): string[] | null {
  const prev = new Map<string, string | null>([[from, null]]);
  const queue = [from];
  while (queue.length > 0) {
    const m = queue.shift() as string;
    if (m !== from && bad(m)) {
      const chain = [m];
      for (let p = prev.get(m); p; p = prev.get(p)) chain.unshift(p);
      return chain;
    }
    for (const d of graph.get(m) ?? []) {
      if (!prev.has(d)) {
        prev.set(d, m);
        queue.push(d);
      }
    }
  }
  return null;
}

const under = (folder: string) => (m: string) => m.startsWith(`${folder}/`);
const anyOf =
  (...rules: ((m: string) => boolean)[]) =>
  (m: string) =>
    rules.some((r) => r(m));
const is =
  (...files: string[]) =>
  (m: string) =>
    files.includes(m);

/** Every chain from a module of `folder` to a forbidden module, reachable or direct. */
function violations(modules: (m: string) => boolean, forbidden: (m: string) => boolean, direct = false): string[] {
  const out: string[] = [];
  for (const m of graph.keys()) {
    if (!modules(m)) continue;
    if (direct) {
      for (const d of graph.get(m) ?? []) if (forbidden(d)) out.push(`${m} -> ${d}`);
    } else {
      const chain = chainTo(m, forbidden);
      if (chain) out.push(chain.join(' -> '));
    }
  }
  return out;
}

describe('layers', () => {
  it('finds the modules and their imports', () => {
    expect(graph.get('socket/server.ts')).toContain('socket/badges.ts');
    expect(graph.get('launch.ts')).toContain('socket/server.ts');
  });

  it('the socket layer reads Redis only: it reaches no database, bridge, source, command, adapter, demo or launcher', () => {
    const forbidden = anyOf(
      is('db.ts', 'migrate.ts', 'launch.ts', 'cli.ts'),
      under('bridge'),
      under('sources'),
      under('compat'),
      under('demo'),
      under('commands'),
    );
    expect(violations(under('socket'), forbidden)).toEqual([]);
  });

  it('only cli.ts and index.ts import the launcher, and nothing imports cli.ts', () => {
    expect(violations((m) => m !== 'cli.ts' && m !== 'index.ts', is('launch.ts', 'cli.ts'), true)).toEqual([]);
    expect(violations(() => true, is('cli.ts'), true)).toEqual([]);
  });

  it('store/ imports nothing of bridge, sources or socket', () => {
    expect(violations(under('store'), anyOf(under('bridge'), under('sources'), under('socket')))).toEqual([]);
  });

  it('sources/ import nothing of bridge, store or socket', () => {
    expect(violations(under('sources'), anyOf(under('bridge'), under('store'), under('socket')))).toEqual([]);
  });

  it('bridge/ imports nothing of socket, commands or the launcher', () => {
    expect(violations(under('bridge'), anyOf(under('socket'), under('commands'), is('launch.ts', 'cli.ts')))).toEqual([]);
  });
});
