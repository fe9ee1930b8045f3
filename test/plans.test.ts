/**
 * Issue 13, goal 4: the statements the bridge runs on the log use their indexes whatever the
 * statistics say. The trap from the issue: autovacuum off, the log ANALYZEd while empty, then
 * filled without an ANALYZE; every cycle became a parallel sequential scan.
 *
 * The plans are the real ones: this session loads auto_explain (EXPLAIN's JSON format, sent back
 * as NOTICEs, nested statements included), runs each query the bridge sends, exactly as db.ts
 * sends it, several times (plpgsql switches to a cached generic plan after five runs), and checks
 * every plan that touches unread_sync.changes.
 */
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queries, supabaseQueries, type Sql } from '../src/db.js';
import { uuid } from './support/env.js';
import { useDb } from './support/fixture.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows'?: number;
  Plans?: PlanNode[];
}

const ROWS = 250_000;
const RUNS = 7;

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

describe('plans that do not depend on statistics (issue 13, goal 4)', () => {
  const db = useDb({ prefix: 'plans' });
  let ex: Sql;
  const notices: string[] = [];
  let previous: string;

  beforeAll(async () => {
    // Statistics of an empty log...
    await db.sql`analyze unread_sync.changes`;
    await db.sql`analyze unread_sync.bridge_state`;
    // ...then 250,000 rows (two days old, so prune has work), never analyzed.
    await db.sql`
      insert into unread_sync.changes (user_id, room_id, unread, created_at)
      select gen_random_uuid(), g::text, 1, now() - interval '2 days' + g * interval '1 ms'
        from generate_series(1, ${ROWS}) g`;
    previous = await queries.currentSnapshot(db.sql);
    await db.sql`insert into unread_sync.bridge_state (name, snapshot) values ('plans', ${previous}::pg_snapshot)`;
    // A few changes the bridge has not read yet.
    await db.sql`insert into unread_sync.changes (user_id, room_id, unread) select gen_random_uuid(), g::text, 2 from generate_series(1, 10) g`;
    const [{ analyzed } = { analyzed: -2 }] = await db.sql<{ analyzed: number }[]>`
      select reltuples::int as analyzed from pg_class where oid = 'unread_sync.changes'::regclass`;
    expect(analyzed).toBe(0); // the planner's statistics still say "empty"

    ex = postgres(db.url, { max: 1, onnotice: (n) => notices.push(String(n.message)) }) as unknown as Sql;
    await ex`load 'auto_explain'`;
    await ex.unsafe(`set auto_explain.log_min_duration = 0;
                     set auto_explain.log_nested_statements = on;
                     set auto_explain.log_level = notice;
                     set auto_explain.log_format = json;
                     set auto_explain.log_analyze = on;
                     set auto_explain.log_timing = off`);
  }, 120_000);

  afterAll(async () => {
    await ex?.end({ timeout: 5 });
  });

  /** The plans (and their nodes) of every statement `work` ran that touched the change log. */
  async function plansOf(work: () => Promise<unknown>): Promise<PlanNode[][]> {
    notices.length = 0;
    await work();
    const plans = notices
      .filter((m) => m.includes('plan:'))
      .map((m) => (JSON.parse(m.slice(m.indexOf('{'))) as { Plan: PlanNode }).Plan)
      .map(nodes);
    return plans.filter((all) => all.some((n) => n['Relation Name'] === 'changes'));
  }

  /**
   * No sequential scan of the log and no parallel plan in any statement; each run read the log
   * through `index` (a delete by ctid, prune's second step, is a Tid Scan).
   */
  function expectIndexed(plans: PlanNode[][], index: string, runs: number): void {
    for (const all of plans) {
      const types = all.map((n) => n['Node Type']);
      expect(types).not.toContain('Gather');
      expect(types).not.toContain('Gather Merge');
      const scans = all.filter((n) => n['Relation Name'] === 'changes' && n['Node Type'] !== 'ModifyTable');
      for (const scan of scans) expect(['Index Scan', 'Index Only Scan', 'Bitmap Heap Scan', 'Tid Scan']).toContain(scan['Node Type']);
    }
    expect(plans.filter((all) => all.some((n) => n['Index Name'] === index)).length).toBeGreaterThanOrEqual(runs);
  }

  it('the trap is set: without its SET clauses, the poll plans a sequential scan of the log', async () => {
    const plans = await plansOf(async () => {
      await ex
        .begin(async (tx) => {
          await tx`alter function unread_sync.has_changes(pg_snapshot) reset all`;
          for (let i = 0; i < RUNS; i++) await queries.hasChangesSince(tx as unknown as Sql, previous);
          throw new Error('rollback');
        })
        .catch((err: Error) => expect(err.message).toBe('rollback'));
    });
    const types = plans
      .flat()
      .filter((n) => n['Relation Name'] === 'changes')
      .map((n) => n['Node Type']);
    expect(types).toContain('Seq Scan');
  });

  it('poll: unread_sync.has_changes uses the xid index', async () => {
    const plans = await plansOf(async () => {
      for (let i = 0; i < RUNS; i++) expect(await queries.hasChangesSince(ex, previous)).toBe(true);
    });
    expectIndexed(plans, 'changes_xid_idx', RUNS);
  });

  it('cycle, one statement: unread_sync.read_cycle uses the xid index', async () => {
    const plans = await plansOf(async () => {
      for (let i = 0; i < RUNS; i++) {
        const rows = await queries.readCycle(ex, previous, 'plans', [uuid()], 2_000);
        expect(rows.filter((r) => r.part === 'change')).toHaveLength(10);
      }
    });
    expectIndexed(plans, 'changes_xid_idx', RUNS);
  });

  it('cycle, cursor path: the read after openCycle uses the xid index', async () => {
    const plans = await plansOf(async () => {
      for (let i = 0; i < RUNS; i++) {
        await ex.begin('isolation level repeatable read read only', async (tx) => {
          await queries.openCycle(tx, previous, 'plans');
          let n = 0;
          for await (const rows of queries.changesSince(tx, previous).cursor(1_000)) n += rows.length;
          expect(n).toBe(10);
        });
      }
    });
    expectIndexed(plans, 'changes_xid_idx', RUNS);
  });

  it('backlog: unread_sync.backlog uses the xid index', async () => {
    const plans = await plansOf(async () => {
      for (let i = 0; i < RUNS; i++) expect(await queries.backlog(ex, 'plans')).toBe(10);
    });
    expectIndexed(plans, 'changes_xid_idx', RUNS);
  });

  it('Supabase catch-up: unread_sync.read_changes uses the xid index', async () => {
    const plans = await plansOf(async () => {
      for (let i = 0; i < RUNS; i++) {
        const rows = await supabaseQueries.readChanges(ex, {
          previous,
          upto: null,
          after: null,
          hydrate: [],
          maxRows: 5_000,
          bridge: 'plans',
        });
        expect(rows.filter((r) => r.part === 'change')).toHaveLength(10);
      }
    });
    expectIndexed(plans, 'changes_xid_idx', RUNS);
  });

  it('prune: by the created_at index, reading only what it deletes (plus the row it stops at)', async () => {
    const readByAge = (plans: PlanNode[][]) =>
      plans
        .flat()
        .filter((n) => n['Index Name'] === 'changes_created_at_idx')
        .reduce((a, n) => a + (n['Actual Rows'] ?? 0), 0);

    // Nothing old enough: nothing read.
    let deleted = -1;
    let plans = await plansOf(async () => {
      deleted = await queries.prune(ex, 3 * 86_400, 7 * 86_400);
    });
    expect(deleted).toBe(0);
    expectIndexed(plans, 'changes_created_at_idx', 1);
    expect(readByAge(plans)).toBe(0);

    // The oldest row is not applied yet (committed after the checkpoint): prune stops there, having
    // read a handful of rows, not the 250,000 applied ones behind it.
    await db.sql`insert into unread_sync.changes (user_id, room_id, unread, created_at)
                 values (${uuid()}, 'unapplied', 1, now() - interval '3 days')`;
    plans = await plansOf(async () => {
      deleted = await queries.prune(ex, 0, 7 * 86_400);
    });
    expect(deleted).toBe(0);
    expectIndexed(plans, 'changes_created_at_idx', 1);
    expect(readByAge(plans)).toBeLessThan(100);

    // Once it is applied: one batch of 1,000 deletes 1,000 and reads about that many.
    await db.sql`update unread_sync.bridge_state set snapshot = pg_current_snapshot() where name = 'plans'`;
    plans = await plansOf(async () => {
      deleted = await queries.prune(ex, 0, 7 * 86_400, 1_000);
    });
    expect(deleted).toBe(1_000);
    expectIndexed(plans, 'changes_created_at_idx', 1);
    expect(readByAge(plans)).toBeLessThanOrEqual(1_000);
    expect(plans.flat().some((n) => n['Node Type'] === 'Tid Scan')).toBe(true); // the delete
  });
});
