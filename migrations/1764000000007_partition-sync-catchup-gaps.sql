-- Up Migration
-- Issue 10, the rest: the Supabase catch-up detects gaps per bridge like the embedded source (a gap
-- older than an earlier one), and partitions of chat_rooms are synced without superuser rights.

-- read_changes() gains the bridge's name: its gap record (bridge_state.lost_xid, written by prune
-- for every checkpoint that had not seen a pruned row) is checked beside the global newest one.
DROP FUNCTION unread_sync.read_changes(pg_snapshot, pg_snapshot, xid8, bigint, uuid[], integer);
CREATE FUNCTION unread_sync.read_changes(
  previous pg_snapshot,
  upto pg_snapshot DEFAULT NULL,
  after_xid xid8 DEFAULT NULL,
  after_id bigint DEFAULT NULL,
  hydrate uuid[] DEFAULT '{}',
  max_rows integer DEFAULT 5000,
  bridge text DEFAULT NULL)
-- room_id is text: room ids are opaque (uuid, bigint, integer or text in the app's table).
RETURNS TABLE (
  part text, snapshot text, gap boolean, more boolean,
  id text, xid text, kind text, user_id uuid, room_id text, unread integer, negative boolean,
  created_at timestamptz)
LANGUAGE sql STABLE
AS $$
  WITH head AS (
    SELECT coalesce(upto, pg_current_snapshot()) AS snap,
           coalesce((SELECT NOT pg_visible_in_snapshot(m.value::xid8, previous)
                       FROM unread_sync.meta m WHERE m.key = 'pruned_unapplied_xid'), false)
           -- The bridge's own record: the newest pruned-unapplied xid its checkpoint had not seen.
           OR coalesce((SELECT NOT pg_visible_in_snapshot(b.lost_xid, previous)
                          FROM unread_sync.bridge_state b WHERE b.name = bridge), false) AS gap
  ), page AS (
    -- Two branches instead of one OR, so each is an index range on xid that stops at the page
    -- end (an OR with ORDER BY ... LIMIT walks the whole index). Bounded above by the new
    -- snapshot's xmax; later pages start at the last (xid, id) read.
    SELECT * FROM (
      SELECT c.id, c.xid, c.kind, c.user_id, c.room_id, c.unread, c.negative, c.created_at
        FROM unread_sync.changes c
       WHERE c.xid >= greatest(pg_snapshot_xmax(previous), coalesce(after_xid, '0'::xid8))
         AND c.xid < pg_snapshot_xmax((SELECT snap FROM head))
      UNION ALL
      SELECT c.id, c.xid, c.kind, c.user_id, c.room_id, c.unread, c.negative, c.created_at
        FROM unread_sync.changes c
       WHERE c.xid = ANY (ARRAY(SELECT pg_snapshot_xip(previous)))
    ) c
     WHERE pg_visible_in_snapshot(c.xid, (SELECT snap FROM head))
       AND (after_xid IS NULL OR (c.xid, c.id) > (after_xid, coalesce(after_id, 0)))
     ORDER BY c.xid, c.id
     LIMIT max_rows + 1
  ), numbered AS (
    SELECT p.*, row_number() OVER (ORDER BY p.xid, p.id) AS n FROM page p
  )
  SELECT 'head', h.snap::text, h.gap, (SELECT count(*) > max_rows FROM page),
         NULL::text, NULL::text, NULL::text, NULL::uuid, NULL::text, NULL::integer, NULL::boolean, NULL::timestamptz
    FROM head h
  UNION ALL
  SELECT 'change', NULL, NULL, NULL, n.id::text, n.xid::text, n.kind, n.user_id, n.room_id::text, n.unread, n.negative, n.created_at
    FROM numbered n WHERE n.n <= max_rows
  UNION ALL
  SELECT 'room', NULL, NULL, NULL, NULL, NULL, NULL, u.user_id, r.id::text, e.unread, NULL, NULL
    FROM unnest(hydrate) AS u(user_id)
    JOIN public.chat_rooms r ON r.user_id = u.user_id OR r.company_id = u.user_id
   CROSS JOIN LATERAL unread_sync.room_unread(
     r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
   WHERE upto IS NULL AND e.user_id = u.user_id AND e.unread > 0
$$;

-- What the DDL event trigger does, callable without superuser rights: the bridge runs it on start
-- and periodically. Installs the TRUNCATE capture on every partition lacking it (row triggers and
-- indexes come from the parent by themselves), and when the set of leaf partitions changed in a way
-- that may have added or removed rows (a filled table attached, a partition detached or dropped)
-- logs a reset, so every cached user reloads from the database. Returns what it did: triggers
-- installed plus 1000 when a reset was logged (0: nothing to do).
-- SECURITY DEFINER, like the capture functions: the bridge's role may not own chat_rooms. It takes
-- no input, search_path is empty and the only identifiers it formats are regclass values from the
-- catalog. A reset needs no lock on the partition: writes in flight log absolute values that apply
-- by version after the reset, like any write during a rebuild.
CREATE FUNCTION unread_sync.sync_partitions() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  now_leaves oid[];
  before oid[];
  added oid;
  filled boolean := false;
  n integer;
BEGIN
  IF to_regclass('public.chat_rooms') IS NULL THEN
    RETURN 0;
  END IF;
  -- One sync at a time (the bridge and the event trigger may run it together).
  PERFORM pg_advisory_xact_lock(hashtext('unread_sync.sync_partitions'));
  n := unread_sync.install_partition_triggers();
  SELECT coalesce(array_agg(t.relid::oid ORDER BY t.relid::oid), '{}') INTO now_leaves
    FROM pg_catalog.pg_partition_tree('public.chat_rooms'::regclass) t WHERE t.level > 0 AND t.isleaf;
  SELECT m.value::oid[] INTO before FROM unread_sync.meta m WHERE m.key = 'partitions';
  before := coalesce(before, '{}');
  IF now_leaves = before THEN
    RETURN n;
  END IF;
  INSERT INTO unread_sync.meta (key, value) VALUES ('partitions', now_leaves::text)
  ON CONFLICT (key) DO UPDATE SET value = excluded.value;
  FOREACH added IN ARRAY now_leaves LOOP
    IF NOT added = ANY (before) THEN
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', added::regclass) INTO filled;
      EXIT WHEN filled;
    END IF;
  END LOOP;
  -- A partition that left may have held rows (it may be dropped already): reset to be safe.
  IF filled OR EXISTS (SELECT 1 FROM unnest(before) b WHERE NOT b = ANY (now_leaves)) THEN
    INSERT INTO unread_sync.changes (kind) VALUES ('reset');
    RETURN n + 1000;
  END IF;
  RETURN n;
END
$$;

-- The event trigger (superuser installs) now shares that code.
CREATE OR REPLACE FUNCTION unread_sync.partitions_changed() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM unread_sync.sync_partitions();
END
$$;

-- Down Migration
CREATE OR REPLACE FUNCTION unread_sync.partitions_changed() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  now_leaves oid[];
  before oid[];
  added oid;
  filled boolean := false;
BEGIN
  IF to_regclass('public.chat_rooms') IS NULL THEN
    RETURN;
  END IF;
  PERFORM unread_sync.install_partition_triggers();
  SELECT coalesce(array_agg(t.relid::oid ORDER BY t.relid::oid), '{}') INTO now_leaves
    FROM pg_catalog.pg_partition_tree('public.chat_rooms'::regclass) t WHERE t.level > 0 AND t.isleaf;
  SELECT m.value::oid[] INTO before FROM unread_sync.meta m WHERE m.key = 'partitions';
  before := coalesce(before, '{}');
  IF now_leaves = before THEN
    RETURN;
  END IF;
  INSERT INTO unread_sync.meta (key, value) VALUES ('partitions', now_leaves::text)
  ON CONFLICT (key) DO UPDATE SET value = excluded.value;
  FOREACH added IN ARRAY now_leaves LOOP
    IF NOT added = ANY (before) THEN
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', added::regclass) INTO filled;
      EXIT WHEN filled;
    END IF;
  END LOOP;
  -- A partition that left may have held rows (it may be dropped already): reset to be safe.
  IF filled OR EXISTS (SELECT 1 FROM unnest(before) b WHERE NOT b = ANY (now_leaves)) THEN
    INSERT INTO unread_sync.changes (kind) VALUES ('reset');
  END IF;
END
$$;
DROP FUNCTION unread_sync.sync_partitions();
DROP FUNCTION unread_sync.read_changes(pg_snapshot, pg_snapshot, xid8, bigint, uuid[], integer, text);
CREATE FUNCTION unread_sync.read_changes(
  previous pg_snapshot,
  upto pg_snapshot DEFAULT NULL,
  after_xid xid8 DEFAULT NULL,
  after_id bigint DEFAULT NULL,
  hydrate uuid[] DEFAULT '{}',
  max_rows integer DEFAULT 5000)
-- room_id is text: room ids are opaque (uuid, bigint, integer or text in the app's table).
RETURNS TABLE (
  part text, snapshot text, gap boolean, more boolean,
  id text, xid text, kind text, user_id uuid, room_id text, unread integer, negative boolean,
  created_at timestamptz)
LANGUAGE sql STABLE
AS $$
  WITH head AS (
    SELECT coalesce(upto, pg_current_snapshot()) AS snap,
           coalesce((SELECT NOT pg_visible_in_snapshot(m.value::xid8, previous)
                       FROM unread_sync.meta m WHERE m.key = 'pruned_unapplied_xid'), false) AS gap
  ), page AS (
    -- Two branches instead of one OR, so each is an index range on xid that stops at the page
    -- end (an OR with ORDER BY ... LIMIT walks the whole index). Bounded above by the new
    -- snapshot's xmax; later pages start at the last (xid, id) read.
    SELECT * FROM (
      SELECT c.id, c.xid, c.kind, c.user_id, c.room_id, c.unread, c.negative, c.created_at
        FROM unread_sync.changes c
       WHERE c.xid >= greatest(pg_snapshot_xmax(previous), coalesce(after_xid, '0'::xid8))
         AND c.xid < pg_snapshot_xmax((SELECT snap FROM head))
      UNION ALL
      SELECT c.id, c.xid, c.kind, c.user_id, c.room_id, c.unread, c.negative, c.created_at
        FROM unread_sync.changes c
       WHERE c.xid = ANY (ARRAY(SELECT pg_snapshot_xip(previous)))
    ) c
     WHERE pg_visible_in_snapshot(c.xid, (SELECT snap FROM head))
       AND (after_xid IS NULL OR (c.xid, c.id) > (after_xid, coalesce(after_id, 0)))
     ORDER BY c.xid, c.id
     LIMIT max_rows + 1
  ), numbered AS (
    SELECT p.*, row_number() OVER (ORDER BY p.xid, p.id) AS n FROM page p
  )
  SELECT 'head', h.snap::text, h.gap, (SELECT count(*) > max_rows FROM page),
         NULL::text, NULL::text, NULL::text, NULL::uuid, NULL::text, NULL::integer, NULL::boolean, NULL::timestamptz
    FROM head h
  UNION ALL
  SELECT 'change', NULL, NULL, NULL, n.id::text, n.xid::text, n.kind, n.user_id, n.room_id::text, n.unread, n.negative, n.created_at
    FROM numbered n WHERE n.n <= max_rows
  UNION ALL
  SELECT 'room', NULL, NULL, NULL, NULL, NULL, NULL, u.user_id, r.id::text, e.unread, NULL, NULL
    FROM unnest(hydrate) AS u(user_id)
    JOIN public.chat_rooms r ON r.user_id = u.user_id OR r.company_id = u.user_id
   CROSS JOIN LATERAL unread_sync.room_unread(
     r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
   WHERE upto IS NULL AND e.user_id = u.user_id AND e.unread > 0
$$;
