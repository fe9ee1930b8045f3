// Log maintenance that never stalls the bridge, and plans that do not depend on statistics.
//
// * An index on unread_sync.changes(created_at), built with CREATE INDEX CONCURRENTLY (the log
//   keeps taking the app's writes meanwhile), so prune() reads only the oldest rows, in age order,
//   and stops at the first row it must keep: its cost is what it deletes, not the log's size (a
//   sequential scan of a 1.3M-row log took 627 ms even when it deleted nothing). CONCURRENTLY
//   cannot run in a transaction, so this migration opts out of one; a build that lost the
//   lock_timeout race leaves an INVALID index behind, which the retry drops first (as in
//   1764000000001). Everything after the index is CREATE OR REPLACE, so a retry repeats it safely.
// * The statements the bridge runs on every cycle (read, poll), for metrics (backlog) and for
//   retention (prune) become functions whose SET clauses switch off sequential scans, parallel
//   plans and JIT for their own queries: with autovacuum off and statistics taken while the log
//   was empty, every cycle became a parallel sequential scan until a manual ANALYZE. Nothing in
//   them depends on the table's statistics any more. Supabase's catch-up, read_changes, gets the
//   same settings (whatever its signature), without touching its body. prune() also turns off
//   bitmap scans and sorts: its oldest-first read must be an ordered index scan that stops early
//   (a bitmap scan plus a sort read all 250,000 old rows to return the first 10).
// * read_cycle(): a whole small cycle in one statement (snapshot, lock-holder pid, gap, changes and
//   hydration rows, all from the statement's snapshot: STABLE, so every query inside reads the
//   calling statement's snapshot, which pg_current_snapshot() returns). It replaces BEGIN, open,
//   read, COMMIT when the changes fit max_rows; a larger cycle is read with the cursor as before.
// * A committed row is applied by every bridge when its xid is below the smallest checkpoint xmax
//   and in no checkpoint's in-progress list: prune() collects those once per call, so its per-row
//   test is a plain expression (a subquery per row made a 20,000-row batch take 2.6 s).
// * prune() runs in batches now, so a gap a checkpoint has not passed yet is kept when a later
//   batch loses older xids (the newest unseen one stays recorded, as one large call recorded it);
//   a gap the checkpoint has passed is replaced, whatever the xids (two gaps in a row).
// The function bodies carry no comments: the Supabase copy of this file is compared statement by
// statement (test/supabase-folder.test.ts); the why is here and in the README.

const plans = 'SET enable_seqscan = off SET jit = off SET max_parallel_workers_per_gather = 0';

const prune = `CREATE OR REPLACE FUNCTION unread_sync.prune(
  min_age interval DEFAULT interval '1 hour',
  max_age interval DEFAULT interval '7 days',
  max_rows integer DEFAULT 100000)
RETURNS bigint
LANGUAGE plpgsql
${plans} SET enable_bitmapscan = off SET enable_sort = off
AS $$
DECLARE
  keep_after timestamptz := now() - min_age;
  drop_before timestamptz := now() - max_age;
  cutoff timestamptz := greatest(now() - min_age, now() - max_age);
  below xid8;
  running xid8[];
  r record;
  doomed tid[] := '{}';
  lost_xids xid8[] := '{}';
  lost xid8;
  deleted bigint := 0;
BEGIN
  SELECT min(pg_snapshot_xmax(b.snapshot)) INTO below FROM unread_sync.bridge_state b;
  SELECT coalesce(array_agg(DISTINCT x), '{}') INTO running
    FROM unread_sync.bridge_state b, pg_snapshot_xip(b.snapshot) x WHERE x < below;
  FOR r IN
    SELECT c.ctid AS t, c.xid, c.created_at
      FROM unread_sync.changes c
     WHERE c.created_at < cutoff
     ORDER BY c.created_at
     LIMIT max_rows
  LOOP
    IF r.created_at < keep_after AND r.xid < below AND NOT r.xid = ANY (running) THEN
      doomed := doomed || r.t;
    ELSIF r.created_at < drop_before THEN
      doomed := doomed || r.t;
      lost_xids := lost_xids || r.xid;
    ELSE
      EXIT;
    END IF;
  END LOOP;
  IF cardinality(doomed) = 0 THEN
    RETURN 0;
  END IF;
  DELETE FROM unread_sync.changes c WHERE c.ctid = ANY (doomed) AND c.created_at < cutoff;
  GET DIAGNOSTICS deleted = ROW_COUNT;
  IF cardinality(lost_xids) > 0 THEN
    SELECT max(x) INTO lost FROM unnest(lost_xids) x;
    INSERT INTO unread_sync.meta (key, value) VALUES ('pruned_unapplied_xid', lost::text)
    ON CONFLICT (key) DO UPDATE
      SET value = greatest(unread_sync.meta.value::xid8, excluded.value::xid8)::text;
    UPDATE unread_sync.bridge_state b
       SET lost_xid = (SELECT CASE WHEN b.lost_xid IS NULL OR pg_visible_in_snapshot(b.lost_xid, b.snapshot)
                                   THEN max(x) ELSE greatest(b.lost_xid, max(x)) END
                         FROM unnest(lost_xids) x WHERE NOT pg_visible_in_snapshot(x, b.snapshot))
     WHERE EXISTS (SELECT 1 FROM unnest(lost_xids) x WHERE NOT pg_visible_in_snapshot(x, b.snapshot));
  END IF;
  RETURN deleted;
END
$$`;

const hasChanges = `CREATE OR REPLACE FUNCTION unread_sync.has_changes(previous pg_snapshot)
RETURNS boolean
LANGUAGE plpgsql STABLE
${plans}
AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM unread_sync.changes c WHERE c.xid >= pg_snapshot_xmax(previous))
      OR EXISTS (SELECT 1 FROM unread_sync.changes c WHERE c.xid = ANY (ARRAY(SELECT pg_snapshot_xip(previous))));
END
$$`;

const backlog = `CREATE OR REPLACE FUNCTION unread_sync.backlog(bridge text)
RETURNS bigint
LANGUAGE plpgsql STABLE
${plans}
AS $$
DECLARE
  s pg_snapshot;
  n bigint;
BEGIN
  SELECT b.snapshot INTO s FROM unread_sync.bridge_state b WHERE b.name = bridge;
  IF s IS NULL THEN
    RETURN 0;
  END IF;
  SELECT count(*) INTO n FROM (
    SELECT 1 FROM unread_sync.changes c WHERE c.xid >= pg_snapshot_xmax(s)
    UNION ALL
    SELECT 1 FROM unread_sync.changes c WHERE c.xid = ANY (ARRAY(SELECT pg_snapshot_xip(s)))) p;
  RETURN n;
END
$$`;

const readCycle = `CREATE OR REPLACE FUNCTION unread_sync.read_cycle(
  previous pg_snapshot,
  bridge text,
  hydrate uuid[] DEFAULT '{}',
  max_rows integer DEFAULT 2000)
RETURNS TABLE (
  part text, snapshot text, pid integer, gap boolean,
  id text, xid text, kind text, user_id uuid, room_id text, unread integer, negative boolean,
  created_at timestamptz)
LANGUAGE plpgsql STABLE
${plans}
AS $$
#variable_conflict use_column
DECLARE
  n bigint;
BEGIN
  RETURN QUERY
  SELECT 'head'::text, pg_current_snapshot()::text, pg_backend_pid(),
         coalesce((SELECT NOT pg_visible_in_snapshot(m.value::xid8, previous)
                     FROM unread_sync.meta m WHERE m.key = 'pruned_unapplied_xid'), false)
         OR coalesce((SELECT NOT pg_visible_in_snapshot(b.lost_xid, previous)
                        FROM unread_sync.bridge_state b WHERE b.name = bridge), false),
         NULL::text, NULL::text, NULL::text, NULL::uuid, NULL::text, NULL::integer, NULL::boolean, NULL::timestamptz;
  RETURN QUERY
  SELECT 'change'::text, NULL::text, NULL::integer, NULL::boolean,
         c.id::text, c.xid::text, c.kind, c.user_id, c.room_id, c.unread, c.negative, c.created_at
    FROM (SELECT c1.id, c1.xid, c1.kind, c1.user_id, c1.room_id, c1.unread, c1.negative, c1.created_at
            FROM unread_sync.changes c1 WHERE c1.xid >= pg_snapshot_xmax(previous)
          UNION ALL
          SELECT c2.id, c2.xid, c2.kind, c2.user_id, c2.room_id, c2.unread, c2.negative, c2.created_at
            FROM unread_sync.changes c2 WHERE c2.xid = ANY (ARRAY(SELECT pg_snapshot_xip(previous)))) c
   LIMIT max_rows + 1;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > max_rows OR cardinality(hydrate) = 0 THEN
    RETURN;
  END IF;
  RETURN QUERY
  SELECT 'room'::text, NULL::text, NULL::integer, NULL::boolean, NULL::text, NULL::text, NULL::text,
         e.user_id, r.id::text, e.unread, NULL::boolean, NULL::timestamptz
    FROM public.chat_rooms r
   CROSS JOIN LATERAL unread_sync.room_unread(
     r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
   WHERE r.user_id = ANY (hydrate) AND e.user_id = r.user_id AND e.unread > 0
  UNION ALL
  SELECT 'room'::text, NULL::text, NULL::integer, NULL::boolean, NULL::text, NULL::text, NULL::text,
         e.user_id, r.id::text, e.unread, NULL::boolean, NULL::timestamptz
    FROM public.chat_rooms r
   CROSS JOIN LATERAL unread_sync.room_unread(
     r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
   WHERE r.company_id = ANY (hydrate) AND e.user_id = r.company_id AND e.unread > 0
     AND r.company_id IS DISTINCT FROM r.user_id;
END
$$`;

const catchUpPlans = `DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'unread_sync'::regnamespace AND p.proname = 'read_changes' LOOP
    EXECUTE format('ALTER FUNCTION %s ${plans}', f);
  END LOOP;
END
$$`;

// prune() as migration 1764000000004 left it, for the way down.
const previousPrune = `CREATE OR REPLACE FUNCTION unread_sync.prune(
  min_age interval DEFAULT interval '1 hour',
  max_age interval DEFAULT interval '7 days',
  max_rows integer DEFAULT 100000)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
  below xid8;
  deleted bigint := 0;
  lost xid8;
  lost_xids xid8[];
BEGIN
  SELECT min(pg_snapshot_xmax(snapshot)) INTO below FROM unread_sync.bridge_state;

  WITH candidates AS (
    SELECT c.ctid, c.xid, c.created_at,
           below IS NOT NULL AND c.xid < below AND NOT EXISTS (
             SELECT 1 FROM unread_sync.bridge_state b
              WHERE NOT pg_visible_in_snapshot(c.xid, b.snapshot)) AS applied
      FROM unread_sync.changes c
     WHERE (below IS NOT NULL AND c.xid < below AND c.created_at < now() - min_age)
        OR c.created_at < now() - max_age
     LIMIT max_rows
  ), gone AS (
    DELETE FROM unread_sync.changes c USING candidates d
     WHERE c.ctid = d.ctid AND (d.applied OR d.created_at < now() - max_age)
    RETURNING d.xid, d.applied
  )
  SELECT count(*), max(xid) FILTER (WHERE NOT applied), array_agg(DISTINCT xid) FILTER (WHERE NOT applied)
    INTO deleted, lost, lost_xids FROM gone;

  IF lost IS NOT NULL THEN
    INSERT INTO unread_sync.meta (key, value) VALUES ('pruned_unapplied_xid', lost::text)
    ON CONFLICT (key) DO UPDATE
      SET value = greatest(unread_sync.meta.value::xid8, excluded.value::xid8)::text;
    UPDATE unread_sync.bridge_state b
       SET lost_xid = (SELECT max(x) FROM unnest(lost_xids) x WHERE NOT pg_visible_in_snapshot(x, b.snapshot))
     WHERE EXISTS (SELECT 1 FROM unnest(lost_xids) x WHERE NOT pg_visible_in_snapshot(x, b.snapshot));
  END IF;
  RETURN deleted;
END
$$`;

const INDEX = 'changes_created_at_idx';

export const up = async (pgm) => {
  pgm.noTransaction();
  const invalid = await pgm.db.select(
    `SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE NOT i.indisvalid AND c.relname = '${INDEX}' AND c.relnamespace = 'unread_sync'::regnamespace`,
  );
  if (invalid.length > 0) pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS unread_sync.${INDEX}`);
  pgm.sql(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${INDEX} ON unread_sync.changes (created_at)`);
  pgm.sql(prune);
  pgm.sql(hasChanges);
  pgm.sql(backlog);
  pgm.sql(readCycle);
  pgm.sql(catchUpPlans);
};

export const down = async (pgm) => {
  pgm.noTransaction();
  pgm.sql(`DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'unread_sync'::regnamespace AND p.proname = 'read_changes' LOOP
    EXECUTE format('ALTER FUNCTION %s RESET enable_seqscan RESET jit RESET max_parallel_workers_per_gather', f);
  END LOOP;
END
$$`);
  pgm.sql('DROP FUNCTION IF EXISTS unread_sync.read_cycle(pg_snapshot, text, uuid[], integer)');
  pgm.sql('DROP FUNCTION IF EXISTS unread_sync.backlog(text)');
  pgm.sql('DROP FUNCTION IF EXISTS unread_sync.has_changes(pg_snapshot)');
  pgm.sql(previousPrune);
  pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS unread_sync.${INDEX}`);
};
