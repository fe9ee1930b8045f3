import { readFileSync, writeFileSync } from 'node:fs';
import type { HarnessRun } from './commit-harness.js';
import { fmt, markdownTable, type LatencySummary } from './lib.js';
import type { OverheadLiveResult } from './overhead-live.js';
import type { PushLatencyResult } from './push-latency.js';
import type { DrainResult, RateRun, RebuildResult } from './scenarios.js';

/** The parts of one run's results the issue 13 tables read (run.ts's Results has them all). */
export interface Issue13Inputs {
  push?: PushLatencyResult;
  overheadLive?: OverheadLiveResult;
  writeToBadge?: { runs: RateRun[] };
  rebuild?: RebuildResult;
  drain?: DrainResult;
}

export interface Target {
  target: string;
  achieved: string;
  met: boolean | null;
}

const pp = (l: LatencySummary | null | undefined) => (l && l.count > 0 ? `${fmt(l.p50)} / ${fmt(l.p99)} ms` : 'n/a');
const runCell = (r: HarnessRun | null | undefined) =>
  r
    ? `${pp(r.commitToRedis)}${r.lost ? ` (**${r.lost} of ${r.commits} commits never visible**)` : ''}${r.unacked ? ` (${r.unacked} of ${r.sent} not committed in time)` : ''}${r.targetRate && r.achievedRate < r.targetRate * 0.95 ? ` (only ${fmt(r.achievedRate)} commits/s)` : ''}`
    : 'n/a';

/** Issue 13's comparison: the same figures for ours and both peers, from this run. */
export function sideBySide(res: Issue13Inputs): string {
  const rows: string[][] = [];
  const p = res.push;
  if (p) {
    for (const o of p.ours.runs) {
      const n = p.notify.runs.find((r) => r.targetRate === o.targetRate);
      rows.push([`commit → Redis p50 / p99 @${fmt(o.targetRate, 0)} commits/s (external harness)`, runCell(o), runCell(n), '(no push)']);
    }
    if (p.ours.idle || p.notify.idle) {
      const n = p.ours.idle?.sent ?? p.notify.idle?.sent ?? 0;
      rows.push([`commit → Redis p50 / p99, one write every 2 s (${n} writes)`, runCell(p.ours.idle), runCell(p.notify.idle), '(no push)']);
    }
  }
  for (const r of res.writeToBadge?.runs ?? []) {
    if (r.commitToSocket)
      rows.push([
        `commit → Socket.IO client p50 / p99 @${fmt(r.targetRate, 0)}/s (scenario 2b; SPUBLISH ${pp(r.commitToRedis)})`,
        pp(r.commitToSocket),
        '–',
        '–',
      ]);
  }
  for (const c of res.overheadLive?.cases ?? []) {
    const cell = (s: 'ours' | 'notify' | 'postgres') => `**${c.ratio[s].toFixed(2)}** (${fmt(c.tps[s])} tps)`;
    const label = c.name === 'uniform' ? `${fmt(c.rooms, 0)} random rooms` : `hot: ${c.rooms} rooms of one company`;
    rows.push([
      `UPDATE tps ratio to no-trigger (${fmt(c.tps.none)} tps), pgbench ${res.overheadLive!.clients} clients, ${label}, each system running`,
      cell('ours'),
      cell('notify'),
      cell('postgres'),
    ]);
  }
  return markdownTable(['figure', 'unread-sync', 'LISTEN/NOTIFY peer', 'Postgres-only peer'], rows);
}

const worst = (runs: HarnessRun[], f: (l: LatencySummary) => number) => Math.max(...runs.map((r) => f(r.commitToRedis)));

/** Issue 13's goals 1–6, each with what this run measured and whether it is met. */
export function issue13Targets(res: Issue13Inputs): Target[] {
  const out: Target[] = [];
  const ours = res.push?.ours;
  const rates = ours?.runs ?? [];
  out.push({
    target: '1a. commit → Redis p50 ≤ 0.5 ms and p99 ≤ 5 ms at 100, 1,000 and 2,000 commits/s',
    achieved: rates.length ? rates.map((r) => `${fmt(r.targetRate, 0)}/s: ${runCell(r)}`).join('; ') : 'not measured in this run',
    met: rates.length
      ? [100, 1_000, 2_000].every((rate) => rates.some((r) => r.targetRate === rate)) &&
        worst(rates, (l) => l.p50) <= 0.5 &&
        worst(rates, (l) => l.p99) <= 5 &&
        rates.every((r) => r.lost === 0 && r.unacked === 0 && r.achievedRate >= r.targetRate * 0.95)
      : null,
  });
  const idle = ours?.idle;
  out.push({
    target: '1b. commit → Redis p50 ≤ 1 ms when writes are rare (one every 2 s)',
    achieved: idle ? runCell(idle) : 'not measured in this run',
    met: idle ? idle.commitToRedis.p50 <= 1 && idle.lost === 0 : null,
  });
  const sock = (res.writeToBadge?.runs ?? []).filter((r) => r.commitToSocket && r.commitToSocket.count > 0);
  out.push({
    target: '1c. commit → Socket.IO client within 1 ms of commit → Redis (same commits, scenario 2)',
    achieved: sock.length
      ? sock
          .map(
            (r) =>
              `${fmt(r.targetRate, 0)}/s: +${fmt(r.commitToSocket!.p50 - r.commitToRedis.p50)} ms p50, +${fmt(r.commitToSocket!.p99 - r.commitToRedis.p99)} ms p99`,
          )
          .join('; ')
      : 'not measured in this run',
    met: sock.length
      ? sock.every((r) => r.commitToSocket!.p50 - r.commitToRedis.p50 <= 1 && r.commitToSocket!.p99 - r.commitToRedis.p99 <= 1)
      : null,
  });
  for (const [name, goal] of [
    ['uniform', 0.75],
    ['hot', 0.7],
  ] as const) {
    const c = res.overheadLive?.cases.find((x) => x.name === name);
    out.push({
      target: `2${name === 'uniform' ? 'a' : 'b'}. UPDATE throughput with the bridge running ≥ ${goal.toFixed(2)} of no-trigger (8 clients${name === 'hot' ? ', hot: 100 rooms of one company' : ''})`,
      achieved: c ? `${c.ratio.ours.toFixed(2)} (${fmt(c.tps.ours)} vs ${fmt(c.tps.none)} tps)` : 'not measured in this run',
      met: c ? c.ratio.ours >= goal : null,
    });
  }
  out.push({
    target: '3. no stalls from maintenance (prune and checkpoint never move p99; prune cost bounded, 5M-row log)',
    achieved: 'not measured by this bench run',
    met: null,
  });
  out.push({
    target: '4. plans that do not depend on statistics (cycle read, poll, prune use their indexes)',
    achieved: 'checked by EXPLAIN in the test suite, not by the bench',
    met: null,
  });
  out.push({
    target: '5a. cold rebuild ≥ 50,000 users/s',
    achieved: res.rebuild
      ? `cli path ${fmt(res.rebuild.cliPath.usersPerSec)}/s; bulk enqueue ${fmt(res.rebuild.bulkEnqueue.usersPerSec)}/s`
      : 'not measured in this run',
    met: res.rebuild ? res.rebuild.cliPath.usersPerSec >= 50_000 : null,
  });
  out.push({
    target: '5b. drain ≥ 100,000 changes/s',
    achieved: res.drain ? `${fmt(res.drain.changesPerSec)} changes/s` : 'not measured in this run',
    met: res.drain ? res.drain.changesPerSec >= 100_000 : null,
  });
  out.push({
    target: '6. socket capacity measured (memory per socket, emit p99 at 10k and 50k sockets)',
    achieved: 'not measured by this bench run',
    met: null,
  });
  return out;
}

export function targetsTable(targets: Target[]): string {
  return markdownTable(
    ['goal (issue 13)', 'achieved', 'met'],
    targets.map((t) => [t.target, t.achieved, t.met === null ? 'not measured' : t.met ? 'yes' : '**NO**']),
  );
}

export const README_BEGIN = '<!-- bench:begin -->';
export const README_END = '<!-- bench:end -->';

/** Replaces what lies between the bench markers of `path` with `content`; refuses when they are missing. */
export function rewriteReadmeBlock(path: string, content: string): void {
  const text = readFileSync(path, 'utf8');
  // Markers on lines of their own: the README also names them in its prose.
  const a = text.indexOf(`\n${README_BEGIN}\n`) + 1;
  const b = text.indexOf(`\n${README_END}`, a) + 1;
  if (a <= 0 || b <= a) throw new Error(`${path} has no ${README_BEGIN} ... ${README_END} block (each on a line of its own)`);
  writeFileSync(path, `${text.slice(0, a + README_BEGIN.length)}\n${content.trim()}\n${text.slice(b)}`);
}
