-- Up Migration
-- Supabase Realtime counts every broadcast row it reads from replication and every delivery to a
-- subscriber against the project's events-per-second quota (100/s on Free, averaged over up to
-- 60 s; over it, rows are dropped and channels shut). One realtime.send per log row made each
-- change cost 2 counted events (4 with per-user topics), so this replaces the row trigger with one
-- send per TRANSACTION and bridge topic: a deferred constraint trigger on unread_sync.changes that,
-- at commit, sends every change of the transaction for that topic as one array.
-- (A statement-level trigger would not batch: the capture trigger inserts log rows one INSERT at a
-- time, so each "statement" on unread_sync.changes is a single row.)
-- Installed only where the realtime migration installed the broadcast (a Realtime schema existed);
-- otherwise it records why, so the bridge can say it on /readyz instead of silently running
-- catch-up only.

-- Fires once per inserted log row at COMMIT (deferred), but sends only once per transaction: the
-- first firing sends every row of the transaction up to the newest id and remembers that id for the
-- rest of the transaction; later firings for rows at or below it return at once without a query.
-- If something runs SET CONSTRAINTS ... IMMEDIATE, rows inserted after a firing have higher ids and
-- are sent by a later firing: nothing is sent twice, nothing is skipped.
CREATE OR REPLACE FUNCTION unread_sync.broadcast_transaction() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  me xid8 := pg_current_xact_id();
  upto bigint := coalesce(nullif(current_setting('unread_sync.broadcast_upto', true), '')::bigint, 0);
  sent_for text := current_setting('unread_sync.broadcast_xid', true);
  shards integer;
  per_user boolean;
  batch_max integer;
  newest bigint;
  r record;
BEGIN
  IF sent_for IS DISTINCT FROM me::text THEN
    upto := 0; -- a setting left by an earlier transaction of this session (is_local keeps it, but be safe)
  END IF;
  IF NEW.id <= upto THEN
    RETURN NULL;
  END IF;
  SELECT coalesce(max(value) FILTER (WHERE key = 'realtime_shards'), '4')::integer,
         coalesce(max(value) FILTER (WHERE key = 'realtime_user_topics'), 'off') = 'on',
         coalesce(max(value) FILTER (WHERE key = 'realtime_batch_max'), '500')::integer
    INTO shards, per_user, batch_max
    FROM unread_sync.meta WHERE key IN ('realtime_shards', 'realtime_user_topics', 'realtime_batch_max');
  shards := greatest(shards, 1);
  batch_max := greatest(batch_max, 1);

  SELECT max(c.id) INTO newest FROM unread_sync.changes c WHERE c.xid = me AND c.id > upto;
  PERFORM set_config('unread_sync.broadcast_xid', me::text, true);
  PERFORM set_config('unread_sync.broadcast_upto', newest::text, true);

  -- Bridge topics: one message per shard (and per batch_max changes, to stay far below Realtime's
  -- payload limit). A reset goes to every shard.
  FOR r IN
    WITH rows AS (
      SELECT c.id, c.kind, c.user_id,
             CASE WHEN c.kind = 'reset'
                  THEN jsonb_build_object('id', c.id::text, 'kind', c.kind, 'created_at', c.created_at)
                  ELSE jsonb_build_object('id', c.id::text, 'kind', c.kind, 'user_id', c.user_id, 'room_id', c.room_id,
                                          'unread', c.unread, 'negative', c.negative, 'created_at', c.created_at)
             END AS event
        FROM unread_sync.changes c
       WHERE c.xid = me AND c.id > upto AND c.id <= newest
    ), routed AS (
      SELECT s.shard, rows.id, rows.event
        FROM rows
       CROSS JOIN LATERAL (
         SELECT g AS shard FROM generate_series(0, shards - 1) g WHERE rows.kind = 'reset'
         UNION ALL
         SELECT (hashtext(rows.user_id::text) & 2147483647) % shards WHERE rows.kind <> 'reset'
       ) s
    ), numbered AS (
      SELECT shard, id, event, (row_number() OVER (PARTITION BY shard ORDER BY id) - 1) / batch_max AS part
        FROM routed
    )
    SELECT shard, jsonb_agg(event ORDER BY id) AS changes FROM numbered GROUP BY shard, part ORDER BY shard, part
  LOOP
    PERFORM realtime.send(jsonb_build_object('xid', me::text, 'changes', r.changes), 'changes',
                          'unread-sync:bridge:' || r.shard, true);
  END LOOP;

  -- Optional per-user topics: one message per user touched by the transaction (their rooms only).
  IF per_user THEN
    FOR r IN
      SELECT c.user_id,
             jsonb_agg(jsonb_build_object('id', c.id::text, 'kind', c.kind, 'user_id', c.user_id, 'room_id', c.room_id,
                                          'unread', c.unread, 'negative', c.negative, 'created_at', c.created_at)
                       ORDER BY c.id) AS changes
        FROM unread_sync.changes c
       WHERE c.xid = me AND c.id > upto AND c.id <= newest AND c.kind <> 'reset'
       GROUP BY c.user_id
    LOOP
      PERFORM realtime.send(jsonb_build_object('xid', me::text, 'changes', r.changes), 'changes',
                            'unread-sync:user:' || r.user_id::text, true);
    END LOOP;
  END IF;
  RETURN NULL;
END
$$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM unread_sync.meta WHERE key = 'realtime_installed') THEN
    -- Visible, not silent: the migration log shows the WARNING and the bridge (UNREAD_SOURCE=supabase)
    -- reports this row on /readyz.
    RAISE WARNING 'unread-sync: no Supabase Realtime schema (realtime.send, realtime.messages) at migration time: broadcasts not installed; UNREAD_SOURCE=supabase runs on catch-up reads only. Re-run the realtime migrations once the schema exists (migrate down --count 2, migrate up).';
    INSERT INTO unread_sync.meta (key, value)
    VALUES ('realtime_missing', 'no realtime schema when the realtime migrations ran at ' || now()::text)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    RETURN;
  END IF;
  DROP TRIGGER IF EXISTS broadcast_change ON unread_sync.changes;
  CREATE CONSTRAINT TRIGGER broadcast_transaction
    AFTER INSERT ON unread_sync.changes
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION unread_sync.broadcast_transaction();
  INSERT INTO unread_sync.meta (key, value) VALUES ('realtime_batches', 'transaction')
  ON CONFLICT (key) DO UPDATE SET value = excluded.value;
END
$$;

-- Down Migration
-- Back to one realtime.send per log row (the trigger of the realtime migration).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM unread_sync.meta WHERE key = 'realtime_batches') THEN
    DROP TRIGGER IF EXISTS broadcast_transaction ON unread_sync.changes;
    CREATE TRIGGER broadcast_change
      AFTER INSERT ON unread_sync.changes
      FOR EACH ROW EXECUTE FUNCTION unread_sync.broadcast_change();
  END IF;
END
$$;
DROP TRIGGER IF EXISTS broadcast_transaction ON unread_sync.changes;
DROP FUNCTION IF EXISTS unread_sync.broadcast_transaction();
DELETE FROM unread_sync.meta WHERE key IN ('realtime_batches', 'realtime_missing', 'realtime_batch_max');
