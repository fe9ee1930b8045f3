-- Up section of migrations/1764000000000_unread-sync-core.sql, byte for byte (test/supabase-folder.test.ts checks it).
-- unread-sync core: change capture on chat_rooms into a durable, commit-order-safe log.
-- Everything lives in schema unread_sync except chat_rooms itself (created only when absent).

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

CREATE SCHEMA unread_sync;

-- Facts the down migration needs (e.g. whether we created chat_rooms).
CREATE TABLE unread_sync.meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);

DO $$
BEGIN
  IF to_regclass('public.chat_rooms') IS NULL THEN
    CREATE TABLE public.chat_rooms (
      id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      user_id              uuid,
      company_id           uuid,
      user_unread_count    integer DEFAULT 0,
      company_unread_count integer DEFAULT 0,
      is_active            boolean DEFAULT true,
      created_at           timestamptz NOT NULL DEFAULT now(),
      updated_at           timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO unread_sync.meta (key, value) VALUES ('created_chat_rooms', 'true');
  END IF;
END
$$;

-- The single definition of "what a room contributes to whose badge".
-- Mirrors the seed's syncFromDatabase: only active rooms count, NULL counts are 0,
-- and when user_id = company_id the user side wins (the room is counted once).
-- Negative counts are clamped to 0 and flagged so the bridge can report them.
CREATE FUNCTION unread_sync.room_unread(
  p_user_id uuid, p_company_id uuid,
  p_user_count integer, p_company_count integer, p_active boolean)
RETURNS TABLE (user_id uuid, unread integer, negative boolean)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT p_user_id, greatest(coalesce(p_user_count, 0), 0), coalesce(p_user_count, 0) < 0
   WHERE p_active IS TRUE AND p_user_id IS NOT NULL
  UNION ALL
  SELECT p_company_id, greatest(coalesce(p_company_count, 0), 0), coalesce(p_company_count, 0) < 0
   WHERE p_active IS TRUE AND p_company_id IS NOT NULL
     AND p_company_id IS DISTINCT FROM p_user_id
$$;

-- Ground truth, computed from chat_rooms: one row per (user, room) with unread > 0.
CREATE VIEW unread_sync.unread_truth AS
SELECT e.user_id, r.id AS room_id, e.unread
  FROM public.chat_rooms r
 CROSS JOIN LATERAL unread_sync.room_unread(
   r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
 WHERE e.unread > 0;

-- The durable change log. Each row is an absolute value: "user U now has N unread in room R".
-- id (a sequence) is the per-(user, room) version: a second change to the same room waits
-- for the first one's row lock, so ids of one room are in commit order.
-- xid is the writing top-level transaction: readers use it with pg_snapshot to read exactly
-- the rows committed since their last snapshot, whatever order ids were handed out in.
CREATE TABLE unread_sync.changes (
  id         bigint GENERATED ALWAYS AS IDENTITY,
  xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
  kind       text NOT NULL DEFAULT 'set',
  user_id    uuid,
  room_id    uuid,
  unread     integer,
  negative   boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE unread_sync.changes IS
  'unread-sync change log: written by triggers on chat_rooms, read by the bridge, pruned by unread_sync.prune()';
CREATE INDEX changes_xid_idx ON unread_sync.changes (xid);

-- Where each bridge has read up to: everything visible in this snapshot has been applied to Redis.
CREATE TABLE unread_sync.bridge_state (
  name       text PRIMARY KEY,
  snapshot   pg_snapshot NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Row trigger: diff the old and new contribution of the row and log every (user, room) that changed.
-- This is the hot path of every chat_rooms write, so it applies room_unread()'s rule inline with
-- plain variables instead of calling it (a set-returning call and a join cost about twice as much);
-- the property tests compare everything the trigger emits against the view built on room_unread().
-- SECURITY DEFINER: the app writes chat_rooms as its own role, which has (and needs) no rights
-- on schema unread_sync; the trigger writes the log as the migration's owner. The empty
-- search_path makes that safe (every name in the body is schema-qualified or built in).
CREATE FUNCTION unread_sync.capture_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  -- Old and new contributions: (user, count) for the user side and the company side.
  ou uuid; ouc integer := 0; oc uuid; occ integer := 0;
  nu uuid; nuc integer := 0; nc uuid; ncc integer := 0;
  orow uuid; nrow uuid;
  was integer;
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
      VALUES (nu, nrow, nuc, coalesce(NEW.user_unread_count < 0, false));
      emitted := true;
    END IF;
  END IF;
  IF nc IS NOT NULL THEN
    was := CASE WHEN nrow = orow AND nc = ou THEN ouc WHEN nrow = orow AND nc = oc THEN occ ELSE 0 END;
    IF ncc <> was THEN
      INSERT INTO unread_sync.changes (user_id, room_id, unread, negative)
      VALUES (nc, nrow, ncc, coalesce(NEW.company_unread_count < 0, false));
      emitted := true;
    END IF;
  END IF;
  -- Old entries with unread that no new entry replaces drop to 0.
  IF ou IS NOT NULL AND ouc > 0 AND NOT (orow = nrow AND (ou = nu OR ou = nc)) IS TRUE THEN
    INSERT INTO unread_sync.changes (user_id, room_id, unread) VALUES (ou, orow, 0);
    emitted := true;
  END IF;
  IF oc IS NOT NULL AND occ > 0 AND NOT (orow = nrow AND (oc = nu OR oc = nc)) IS TRUE THEN
    INSERT INTO unread_sync.changes (user_id, room_id, unread) VALUES (oc, orow, 0);
    emitted := true;
  END IF;

  -- Optional wake-up hint (identical payloads fold into one per transaction). Off by default:
  -- NOTIFY takes a cluster-wide lock from commit to WAL flush, which serialised all committing
  -- writers and cost about 70% of UPDATE throughput in our benchmark. The bridge polls instead.
  -- Low-write databases that want an instant wake-up: ALTER DATABASE ... SET unread_sync.notify = on.
  IF emitted AND current_setting('unread_sync.notify', true) = 'on' THEN
    PERFORM pg_notify('unread_sync', '');
  END IF;
  RETURN NULL;
END
$$;

-- TRUNCATE skips row triggers: log a reset so the bridge forgets every cached user.
CREATE FUNCTION unread_sync.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  INSERT INTO unread_sync.changes (kind) VALUES ('reset');
  IF current_setting('unread_sync.notify', true) = 'on' THEN
    PERFORM pg_notify('unread_sync', '');
  END IF;
  RETURN NULL;
END
$$;

-- This capture assumes uuid room ids; on other id types the triggers come with migration
-- 1764000000003 (which replaces these on every database), so the app is never left with a
-- trigger that fails its writes.
DO $$
BEGIN
  IF (SELECT format_type(atttypid, NULL) FROM pg_attribute
       WHERE attrelid = 'public.chat_rooms'::regclass AND attname = 'id') = 'uuid' THEN
    CREATE TRIGGER unread_sync_capture
      AFTER INSERT OR DELETE OR UPDATE OF id, user_id, company_id, user_unread_count, company_unread_count, is_active
      ON public.chat_rooms
      FOR EACH ROW EXECUTE FUNCTION unread_sync.capture_change();
  END IF;
END
$$;

CREATE TRIGGER unread_sync_capture_truncate
  AFTER TRUNCATE ON public.chat_rooms
  FOR EACH STATEMENT EXECUTE FUNCTION unread_sync.capture_truncate();

-- Bounded log: delete what every bridge has applied (visible in every checkpoint snapshot) once
-- it is older than min_age. Rows older than max_age go even if unapplied; the newest such xid is
-- recorded so a bridge that falls that far behind sees the gap and rebuilds instead of serving
-- wrong totals.
CREATE FUNCTION unread_sync.prune(
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
BEGIN
  -- Nothing at or past the smallest checkpoint xmax can be applied everywhere: an index range.
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
  SELECT count(*), max(xid) FILTER (WHERE NOT applied) INTO deleted, lost FROM gone;

  IF lost IS NOT NULL THEN
    INSERT INTO unread_sync.meta (key, value) VALUES ('pruned_unapplied_xid', lost::text)
    ON CONFLICT (key) DO UPDATE
      SET value = greatest(unread_sync.meta.value::xid8, excluded.value::xid8)::text;
  END IF;
  RETURN deleted;
END
$$;

