-- Up section of migrations/1764000000002_realtime-broadcast.sql, byte for byte (test/supabase-folder.test.ts checks it).
-- unread-sync on Supabase: single-statement catch-up, a lease instead of a session lock, and,
-- when the database has Supabase Realtime's schema, a broadcast of every change-log row through
-- realtime.send() in the writing transaction. Realtime is the fast path, never the record:
-- realtime.send() swallows its own errors and delivers at most once, so the bridge reconciles
-- from unread_sync.changes (read_changes below) after every (re)subscribe and periodically.

-- One bridge per name is active. A transaction-mode pooler cannot hold a session advisory lock,
-- so the active bridge holds a lease row it renews; the checkpoint is only written by the holder.
CREATE TABLE unread_sync.bridge_lease (
  name       text PRIMARY KEY,
  holder     text NOT NULL,
  expires_at timestamptz NOT NULL
);

-- The catch-up, in ONE statement (so it works through a transaction-mode pooler or PostgREST rpc):
-- the rows committed since `previous` and visible in the statement's snapshot (same xid rule as the
-- embedded source), page by page, plus the hydration rows of `hydrate` from that same snapshot.
-- First page: `upto` NULL, the statement's snapshot becomes the new position (row part = 'head').
-- Next pages: pass that snapshot as `upto` and the last (xid, id) read; `more` says whether to.
-- STABLE: every read inside uses the calling statement's snapshot, which pg_current_snapshot() is.
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

-- Realtime broadcast of each log row (installed only where Supabase Realtime's schema exists).
-- Topics: 'unread-sync:bridge:<shard>' (private; the bridge, service role only), shard =
-- hashtext(user_id) mod meta.realtime_shards; a reset goes to every shard. Optionally
-- 'unread-sync:user:<uuid>' (private; that user only) when meta.realtime_user_topics = 'on'.
-- The payload is the change event plus its xid (the bridge drops live events its last catch-up
-- already covered). SECURITY DEFINER: app writes arrive as `authenticated` through PostgREST, and
-- realtime.send() runs as its caller (RLS INSERT policies on realtime.messages would apply).
CREATE FUNCTION unread_sync.broadcast_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  shards integer;
  per_user boolean;
  body jsonb;
  i integer;
BEGIN
  SELECT coalesce(max(value) FILTER (WHERE key = 'realtime_shards'), '4')::integer,
         coalesce(max(value) FILTER (WHERE key = 'realtime_user_topics'), 'off') = 'on'
    INTO shards, per_user
    FROM unread_sync.meta WHERE key IN ('realtime_shards', 'realtime_user_topics');
  IF NEW.kind = 'reset' THEN
    body := jsonb_build_object('id', NEW.id::text, 'xid', NEW.xid::text, 'kind', NEW.kind, 'created_at', NEW.created_at);
    FOR i IN 0 .. greatest(shards, 1) - 1 LOOP
      PERFORM realtime.send(body, 'change', 'unread-sync:bridge:' || i, true);
    END LOOP;
    RETURN NULL;
  END IF;
  body := jsonb_build_object(
    'id', NEW.id::text, 'xid', NEW.xid::text, 'kind', NEW.kind, 'user_id', NEW.user_id,
    'room_id', NEW.room_id, 'unread', NEW.unread, 'negative', NEW.negative, 'created_at', NEW.created_at);
  PERFORM realtime.send(body, 'change',
    'unread-sync:bridge:' || ((hashtext(NEW.user_id::text) & 2147483647) % greatest(shards, 1)), true);
  IF per_user THEN
    PERFORM realtime.send(body, 'change', 'unread-sync:user:' || NEW.user_id::text, true);
  END IF;
  RETURN NULL;
END
$$;

DO $$
BEGIN
  IF to_regnamespace('realtime') IS NULL
     OR to_regprocedure('realtime.send(jsonb, text, text, boolean)') IS NULL
     OR to_regclass('realtime.messages') IS NULL THEN
    RAISE NOTICE 'unread-sync: no Supabase Realtime schema, broadcast not installed (the postgres source works unchanged)';
    RETURN;
  END IF;

  INSERT INTO unread_sync.meta (key, value) VALUES ('realtime_installed', 'true'), ('realtime_shards', '4')
  ON CONFLICT (key) DO NOTHING;

  CREATE TRIGGER broadcast_change
    AFTER INSERT ON unread_sync.changes
    FOR EACH ROW EXECUTE FUNCTION unread_sync.broadcast_change();

  -- App writes to chat_rooms arrive as `authenticated`/`anon` on Supabase, which have no rights
  -- on schema unread_sync: let the capture triggers write the log as their owner. Recorded so
  -- the down migration restores exactly what was there.
  IF NOT (SELECT prosecdef FROM pg_proc WHERE oid = 'unread_sync.capture_change()'::regprocedure) THEN
    ALTER FUNCTION unread_sync.capture_change() SECURITY DEFINER SET search_path = '';
    ALTER FUNCTION unread_sync.capture_truncate() SECURITY DEFINER SET search_path = '';
    INSERT INTO unread_sync.meta (key, value) VALUES ('realtime_capture_secdef', 'true');
  END IF;

  -- Who may join which private topic (Realtime checks SELECT on realtime.messages with
  -- realtime.topic() set to the topic). A signed-in user reads only their own badge topic.
  CREATE POLICY unread_sync_user_badge_read ON realtime.messages
    FOR SELECT TO authenticated
    USING (extension = 'broadcast'
           AND (SELECT realtime.topic()) = 'unread-sync:user:' || (SELECT auth.uid())::text);
  -- Restrictive, so a broad policy the app has elsewhere cannot open these topics: nobody but the
  -- service role (which bypasses RLS) reads the bridge topics or another user's badge topic ...
  CREATE POLICY unread_sync_topics_read_guard ON realtime.messages
    AS RESTRICTIVE FOR SELECT TO anon, authenticated
    USING (left(coalesce((SELECT realtime.topic()), ''), 12) <> 'unread-sync:'
           OR (SELECT realtime.topic()) = 'unread-sync:user:' || (SELECT auth.uid())::text);
  -- ... and no client can broadcast (forge badge events) on them.
  CREATE POLICY unread_sync_topics_write_guard ON realtime.messages
    AS RESTRICTIVE FOR INSERT TO anon, authenticated
    WITH CHECK (left(topic, 12) <> 'unread-sync:'
                AND left(coalesce((SELECT realtime.topic()), ''), 12) <> 'unread-sync:');
END
$$;

