import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ApplyStatus, HydrateStatus } from '../src/store/status.js';

// Service-free: the sentinel values the Lua scripts return are named once in src/store/status.ts;
// each script lists them in its header and declares locals of the same names and values.
const script = (name: string) => readFileSync(new URL(`../src/store/lua/${name}.lua`, import.meta.url), 'utf8');

/** NAME = value lines of the header's "Statuses (...):" block. */
function headerStatuses(text: string): Record<string, number> {
  const header = text.slice(0, text.indexOf(']]'));
  const lines = header.split('\n');
  const at = lines.findIndex((l) => /^\s*Statuses \(/.test(l));
  expect(at, 'a "Statuses (...):" block in the header').toBeGreaterThanOrEqual(0);
  const out: Record<string, number> = {};
  for (const line of lines.slice(at + 1)) {
    const m = /^\s+([A-Z][A-Z_]*) = (-?\d+)\b/.exec(line);
    if (!m) break;
    out[m[1] as string] = Number(m[2]);
  }
  return out;
}

/** Top-level `local NAME = value` declarations of the given names. */
function locals(text: string, names: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of names) {
    const m = new RegExp(`^local ${name} = (-?\\d+)$`, 'm').exec(text);
    if (m) out[name] = Number(m[1]);
  }
  return out;
}

describe.each([
  ['applyChanges', ApplyStatus],
  ['hydrate', HydrateStatus],
] as const)('%s.lua statuses', (name, statuses) => {
  const text = script(name);

  it('the header lists exactly the TS constants, with their values', () => {
    expect(headerStatuses(text)).toEqual({ ...statuses });
  });

  it('the script declares each as a local of the same name and value', () => {
    expect(locals(text, Object.keys(statuses))).toEqual({ ...statuses });
  });

  it('the script body uses names, no bare negative values', () => {
    const body = text.slice(text.indexOf(']]') + 2);
    const bare = body
      .split('\n')
      .filter((l) => !/^local [A-Z_]+ = -?\d+$/.test(l) && !/^\s*--/.test(l))
      .filter((l) => /(?<![\w.\])])\s*-\d/.test(l.replace(/\s+-\s+/g, ' ')));
    expect(bare).toEqual([]);
  });
});
