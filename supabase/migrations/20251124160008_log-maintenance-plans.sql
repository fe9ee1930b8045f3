-- Supabase copy of migrations/1764000000008_log-maintenance-plans.js (test/supabase-folder.test.ts checks it).
-- The Supabase CLI runs each migration file in a transaction, where CREATE INDEX CONCURRENTLY is not
-- allowed, so the created_at index is built plainly here: that takes a SHARE lock on unread_sync.changes
-- (the app's writes to chat_rooms wait) for the build. On a large log, build it first by hand, outside a
-- transaction:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS changes_created_at_idx ON unread_sync.changes (created_at);
-- and this file then skips it (IF NOT EXISTS). The why of every function is in the .js migration.
CREATE INDEX IF NOT EXISTS changes_created_at_idx ON unread_sync.changes (created_at);

CREATE OR REPLACE FUNCTION unread_sync.prune(
  min_age interval DEFAULT interval '1 hour',
  max_age interval DEFAULT interval '7 days',
  max_rows integer DEFAULT 100000)
RETURNS bigint
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET max_parallel_workers_per_gather = 0 SET enable_bitmapscan = off SET enable_sort = off
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
$$;

CREATE OR REPLACE FUNCTION unread_sync.has_changes(previous pg_snapshot)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET jit = off SET max_parallel_workers_per_gather = 0
AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM unread_sync.changes c WHERE c.xid >= pg_snapshot_xmax(previous))
      OR EXISTS (SELECT 1 FROM unread_sync.changes c WHERE c.xid = ANY (ARRAY(SELECT pg_snapshot_xip(previous))));
END
$$;

CREATE OR REPLACE FUNCTION unread_sync.backlog(bridge text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET jit = off SET max_parallel_workers_per_gather = 0
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
$$;

CREATE OR REPLACE FUNCTION unread_sync.read_cycle(
  previous pg_snapshot,
  bridge text,
  hydrate uuid[] DEFAULT '{}',
  max_rows integer DEFAULT 2000)
RETURNS TABLE (
  part text, snapshot text, pid integer, gap boolean,
  id text, xid text, kind text, user_id uuid, room_id text, unread integer, negative boolean,
  created_at timestamptz)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET jit = off SET max_parallel_workers_per_gather = 0
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
$$;

DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = 'unread_sync'::regnamespace AND p.proname = 'read_changes' LOOP
    EXECUTE format('ALTER FUNCTION %s SET enable_seqscan = off SET jit = off SET max_parallel_workers_per_gather = 0', f);
  END LOOP;
END
$$;
