-- Up section of migrations/1764000000009_logical-wakeup.sql, byte for byte (test/supabase-folder.test.ts checks it).
-- The logical source (UNREAD_SOURCE=auto|logical) streams this publication over a temporary
-- replication slot as a wake-up: a commit that inserted log rows runs a bridge cycle at once
-- instead of at the next poll. The log stays the record; the stream carries no data the bridge
-- needs, so on PostgreSQL 15+ only the id column is published (less WAL decoded and sent).
-- Inserts only: prune's deletes are no news. Without the right to create a publication (CREATE
-- on the database) nothing is created and the bridge polls, as before.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'unread_sync_changes') THEN
    RETURN;
  END IF;
  IF current_setting('server_version_num')::int >= 150000 THEN
    EXECUTE 'CREATE PUBLICATION unread_sync_changes FOR TABLE unread_sync.changes (id) WITH (publish = ''insert'')';
  ELSE
    EXECUTE 'CREATE PUBLICATION unread_sync_changes FOR TABLE unread_sync.changes WITH (publish = ''insert'')';
  END IF;
EXCEPTION WHEN insufficient_privilege THEN
  RAISE NOTICE 'unread-sync: no right to create publication unread_sync_changes; the bridge will poll the log';
END
$$;

