-- Up section of migrations/1764000000003_capture-final-rows.sql, byte for byte (test/supabase-folder.test.ts checks it).
-- Capture that sees every change the way it ends up (issue 10): the final row whatever changed it
-- (no column list: an app BEFORE trigger that bumps a count on `SET last_message` is seen), the
-- statement's net effect per (user, room) (a primary-key permutation logs what each room holds
-- after the statement), writes under session_replication_role = replica (ENABLE ALWAYS),
-- partitioned chat_rooms (TRUNCATE of one partition, rows moving between partitions), and room
-- ids of type uuid, bigint, integer or text (the log carries them as opaque text).

-- Pre-check, before anything changes: chat_rooms (when it exists) must have the columns and types
-- the capture understands. Refusing here leaves the app's table and triggers untouched.
DO $$
DECLARE
  want constant text[][] := ARRAY[
    ['id', 'uuid, bigint, integer, text'],
    ['user_id', 'uuid'],
    ['company_id', 'uuid'],
    ['user_unread_count', 'integer'],
    ['company_unread_count', 'integer'],
    ['is_active', 'boolean']];
  col text;
  allowed text;
  found text;
  i integer;
BEGIN
  IF to_regclass('public.chat_rooms') IS NULL THEN
    RETURN;
  END IF;
  FOR i IN 1 .. array_length(want, 1) LOOP
    col := want[i][1];
    allowed := want[i][2];
    SELECT format_type(a.atttypid, NULL) INTO found
      FROM pg_attribute a
     WHERE a.attrelid = 'public.chat_rooms'::regclass AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF found IS NULL THEN
      RAISE EXCEPTION 'unread-sync: public.chat_rooms has no column "%" (expected type: %); nothing was changed', col, allowed;
    END IF;
    IF NOT found = ANY (string_to_array(allowed, ', ')) THEN
      RAISE EXCEPTION 'unread-sync: public.chat_rooms.% is of type %, supported: %; nothing was changed', col, found, allowed;
    END IF;
  END LOOP;
END
$$;

-- Locks in the order the app's writes take them (chat_rooms, then the log through the capture
-- trigger). Taking the log first deadlocks with any concurrent write to chat_rooms, and under
-- lock_timeout every retry of this migration would lose that race again.
LOCK TABLE public.chat_rooms IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE unread_sync.changes IN ACCESS EXCLUSIVE MODE;

-- Room ids are opaque text from here on (uuid, bigint, integer and text ids all print exactly).
-- Rewrites the log (kept short by prune) under a brief exclusive lock.
ALTER TABLE unread_sync.changes ALTER COLUMN room_id TYPE text USING room_id::text;

DROP VIEW unread_sync.unread_truth;
CREATE VIEW unread_sync.unread_truth AS
SELECT e.user_id, r.id::text AS room_id, e.unread
  FROM public.chat_rooms r
 CROSS JOIN LATERAL unread_sync.room_unread(
   r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
 WHERE e.unread > 0;

-- Deployments that ran the realtime migration before it returned text room ids.
DROP FUNCTION unread_sync.read_changes(pg_snapshot, pg_snapshot, xid8, bigint, uuid[], integer);
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

-- Row trigger, fired after the statement (AFTER ROW events run once every row is written), so
-- every value it logs is read from the statement's final state:
-- * the new side comes from NEW, the row as stored (after any BEFORE trigger changed it);
-- * an old (user, room) that the new row no longer covers drops to 0 when the row kept its id;
--   when the row left that id (primary key changed, row deleted, row moved to another
--   partition, which runs as DELETE + INSERT) another row may hold the id now (a permutation
--   `SET id = CASE id WHEN A THEN B WHEN B THEN C END` under a deferrable key), so the value is
--   looked up by primary key in chat_rooms as the statement left it.
-- Row-level rather than statement-level with transition tables: measured on this machine, the
-- set-based statement trigger made single-row UPDATEs 1.5-2x slower (it is 2-4x faster on one
-- 100k-row UPDATE), and the single-row UPDATE is the app's hot path (README, "Guarantees").
-- Column types come from chat_rooms itself (%TYPE): room ids of any supported type, logged as text.
CREATE OR REPLACE FUNCTION unread_sync.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  -- Old and new contributions: (user, count) for the user side and the company side.
  ou uuid; ouc integer := 0; oc uuid; occ integer := 0;
  nu uuid; nuc integer := 0; nc uuid; ncc integer := 0;
  orow public.chat_rooms.id%TYPE; nrow public.chat_rooms.id%TYPE;
  was integer;  -- also: the value an old (user, room) holds after the statement
  emitted boolean := false;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    orow := OLD.id;
    IF OLD.is_active IS TRUE THEN
      ou := OLD.user_id;
      ouc := greatest(coalesce(OLD.user_unread_count, 0), 0);
      IF OLD.company_id IS DISTINCT FROM OLD.user_id THEN
        oc := OLD.company_id;
        occ := greatest(coalesce(OLD.company_unread_count, 0), 0);
      END IF;
    END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    nrow := NEW.id;
    IF NEW.is_active IS TRUE THEN
      nu := NEW.user_id;
      nuc := greatest(coalesce(NEW.user_unread_count, 0), 0);
      IF NEW.company_id IS DISTINCT FROM NEW.user_id THEN
        nc := NEW.company_id;
        ncc := greatest(coalesce(NEW.company_unread_count, 0), 0);
      END IF;
    END IF;
  END IF;

  -- New entries whose value differs from the same (user, room) before.
  IF nu IS NOT NULL THEN
    was := CASE WHEN nrow = orow AND nu = ou THEN ouc WHEN nrow = orow AND nu = oc THEN occ ELSE 0 END;
    IF nuc <> was THEN
      INSERT INTO unread_sync.changes (user_id, room_id, unread, negative)
      VALUES (nu, nrow::text, nuc, coalesce(NEW.user_unread_count < 0, false));
      emitted := true;
    END IF;
  END IF;
  IF nc IS NOT NULL THEN
    was := CASE WHEN nrow = orow AND nc = ou THEN ouc WHEN nrow = orow AND nc = oc THEN occ ELSE 0 END;
    IF ncc <> was THEN
      INSERT INTO unread_sync.changes (user_id, room_id, unread, negative)
      VALUES (nc, nrow::text, ncc, coalesce(NEW.company_unread_count < 0, false));
      emitted := true;
    END IF;
  END IF;
  -- Old entries with unread that the new row does not cover: 0, or what the room holds now.
  IF ou IS NOT NULL AND ouc > 0 AND NOT (orow = nrow AND (ou = nu OR ou = nc)) IS TRUE THEN
    was := 0;
    IF nrow IS DISTINCT FROM orow THEN
      SELECT coalesce(sum(CASE WHEN r.user_id = ou THEN greatest(coalesce(r.user_unread_count, 0), 0)
                               ELSE greatest(coalesce(r.company_unread_count, 0), 0) END), 0)
        INTO was
        FROM public.chat_rooms r
       WHERE r.id = orow AND r.is_active IS TRUE
         AND (r.user_id = ou OR (r.company_id = ou AND r.company_id IS DISTINCT FROM r.user_id));
    END IF;
    INSERT INTO unread_sync.changes (user_id, room_id, unread) VALUES (ou, orow::text, was);
    emitted := true;
  END IF;
  IF oc IS NOT NULL AND occ > 0 AND NOT (orow = nrow AND (oc = nu OR oc = nc)) IS TRUE THEN
    was := 0;
    IF nrow IS DISTINCT FROM orow THEN
      SELECT coalesce(sum(CASE WHEN r.user_id = oc THEN greatest(coalesce(r.user_unread_count, 0), 0)
                               ELSE greatest(coalesce(r.company_unread_count, 0), 0) END), 0)
        INTO was
        FROM public.chat_rooms r
       WHERE r.id = orow AND r.is_active IS TRUE
         AND (r.user_id = oc OR (r.company_id = oc AND r.company_id IS DISTINCT FROM r.user_id));
    END IF;
    INSERT INTO unread_sync.changes (user_id, room_id, unread) VALUES (oc, orow::text, was);
    emitted := true;
  END IF;

  -- Optional wake-up hint, off by default (see the core migration).
  IF emitted AND current_setting('unread_sync.notify', true) = 'on' THEN
    PERFORM pg_notify('unread_sync', '');
  END IF;
  RETURN NULL;
END
$$;

-- TRUNCATE of one partition fires only that partition's own statement triggers (they are not
-- cloned from the parent like row triggers): every partition, at any level, gets the reset
-- trigger. Idempotent; the DDL event trigger below runs it for partitions created later, and a
-- DBA without superuser rights runs it after adding partitions. ENABLE ALWAYS: see below.
-- SECURITY DEFINER (like the capture functions): the DDL event trigger runs it as whoever creates
-- the partition, typically the app's role, which has no rights on schema unread_sync.
CREATE FUNCTION unread_sync.install_partition_triggers() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  p regclass;
  n integer := 0;
BEGIN
  IF to_regclass('public.chat_rooms') IS NULL THEN
    RETURN 0;
  END IF;
  FOR p IN
    SELECT t.relid FROM pg_catalog.pg_partition_tree('public.chat_rooms'::regclass) t
     WHERE t.level > 0
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                        WHERE g.tgrelid = t.relid AND g.tgname = 'unread_sync_capture_truncate')
  LOOP
    EXECUTE format('CREATE TRIGGER unread_sync_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION unread_sync.capture_truncate()', p);
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER unread_sync_capture_truncate', p);
    n := n + 1;
  END LOOP;
  RETURN n;
END
$$;

-- Partitions come and go by DDL, which no table trigger sees: a new partition needs its TRUNCATE
-- trigger, and ATTACH of a filled table, DETACH or DROP of a partition changes which rows
-- chat_rooms holds without a row trigger firing. The leaf partitions are remembered in meta; when
-- the set changes in a way that may move rows, a reset is logged (every cached user reloads).
CREATE FUNCTION unread_sync.partitions_changed() RETURNS event_trigger
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

-- The trigger set. No column list on UPDATE (a BEFORE trigger may change counts the statement
-- does not name); the WHEN clause skips, without calling the function, updates that leave every
-- column of the rule as it was (e.g. `SET last_message = ...` with no counting trigger).
DROP TRIGGER IF EXISTS unread_sync_capture ON public.chat_rooms;
DROP TRIGGER IF EXISTS unread_sync_capture_truncate ON public.chat_rooms;
CREATE TRIGGER unread_sync_capture
  AFTER INSERT OR DELETE ON public.chat_rooms
  FOR EACH ROW EXECUTE FUNCTION unread_sync.capture_change();
CREATE TRIGGER unread_sync_capture_update
  AFTER UPDATE ON public.chat_rooms
  FOR EACH ROW
  WHEN ((OLD.id, OLD.user_id, OLD.company_id, OLD.user_unread_count, OLD.company_unread_count, OLD.is_active)
        IS DISTINCT FROM
        (NEW.id, NEW.user_id, NEW.company_id, NEW.user_unread_count, NEW.company_unread_count, NEW.is_active))
  EXECUTE FUNCTION unread_sync.capture_change();
CREATE TRIGGER unread_sync_capture_truncate
  AFTER TRUNCATE ON public.chat_rooms
  FOR EACH STATEMENT EXECUTE FUNCTION unread_sync.capture_truncate();

-- ENABLE ALWAYS: capture also under session_replication_role = replica, which data-only restores
-- (pg_restore --disable-triggers), pg_dump --data-only loads and logical-replication apply
-- workers use. Those writes change chat_rooms, so they change badges (README, "Guarantees").
-- On a partitioned table this recurses to the partitions' clones of the row triggers.
ALTER TABLE public.chat_rooms ENABLE ALWAYS TRIGGER unread_sync_capture;
ALTER TABLE public.chat_rooms ENABLE ALWAYS TRIGGER unread_sync_capture_update;
ALTER TABLE public.chat_rooms ENABLE ALWAYS TRIGGER unread_sync_capture_truncate;
SELECT unread_sync.install_partition_triggers();
INSERT INTO unread_sync.meta (key, value)
SELECT 'partitions', coalesce(array_agg(t.relid::oid ORDER BY t.relid::oid), '{}')::text
  FROM pg_catalog.pg_partition_tree('public.chat_rooms'::regclass) t WHERE t.level > 0 AND t.isleaf
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

DO $$
BEGIN
  -- The Realtime broadcast of log rows must follow the capture into replica-role sessions too.
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'broadcast_change' AND tgrelid = 'unread_sync.changes'::regclass) THEN
    ALTER TABLE unread_sync.changes ENABLE ALWAYS TRIGGER broadcast_change;
  END IF;
  -- Event triggers need a superuser. Without one, partitions added later need
  -- `SELECT unread_sync.install_partition_triggers()` (README, DBA section).
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    CREATE EVENT TRIGGER unread_sync_partitions ON ddl_command_end
      WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
      EXECUTE FUNCTION unread_sync.partitions_changed();
    CREATE EVENT TRIGGER unread_sync_partitions_drop ON sql_drop
      WHEN TAG IN ('DROP TABLE')
      EXECUTE FUNCTION unread_sync.partitions_changed();
  ELSE
    RAISE NOTICE 'unread-sync: not a superuser, no DDL event trigger: after adding partitions to chat_rooms run SELECT unread_sync.install_partition_triggers()';
  END IF;
END
$$;

