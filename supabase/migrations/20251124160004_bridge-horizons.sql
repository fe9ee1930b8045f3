-- Up section of migrations/1764000000004_bridge-horizons.sql, byte for byte (test/supabase-folder.test.ts checks it).
-- unread-sync bridge horizons: exact gap detection per bridge, and a database incarnation so a
-- bridge can tell a restored or moved database from the one its Redis cache was built from.

-- A pruned, never-applied row is recorded against every checkpoint that had not seen it (the
-- newest such xid per bridge). One global "newest xid" missed a gap whose xid was older than an
-- earlier gap's (a transaction held open past max_age, pruned after a first gap reset).
ALTER TABLE unread_sync.bridge_state ADD COLUMN lost_xid xid8;

-- A random id for this database, made at migration. A restore or a pg_dump copy keeps it; the
-- bridge combines it with the cluster's system identifier and the database oid, which do not
-- survive a move, and with the xid and log-id horizons, which go back on a rewind.
INSERT INTO unread_sync.meta (key, value) VALUES ('incarnation', gen_random_uuid()::text)
ON CONFLICT (key) DO NOTHING;

CREATE OR REPLACE FUNCTION unread_sync.prune(
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
  SELECT count(*), max(xid) FILTER (WHERE NOT applied), array_agg(DISTINCT xid) FILTER (WHERE NOT applied)
    INTO deleted, lost, lost_xids FROM gone;

  IF lost IS NOT NULL THEN
    INSERT INTO unread_sync.meta (key, value) VALUES ('pruned_unapplied_xid', lost::text)
    ON CONFLICT (key) DO UPDATE
      SET value = greatest(unread_sync.meta.value::xid8, excluded.value::xid8)::text;
    -- Every bridge whose checkpoint had not seen one of them has a gap, whatever its xid.
    UPDATE unread_sync.bridge_state b
       SET lost_xid = (SELECT max(x) FROM unnest(lost_xids) x WHERE NOT pg_visible_in_snapshot(x, b.snapshot))
     WHERE EXISTS (SELECT 1 FROM unnest(lost_xids) x WHERE NOT pg_visible_in_snapshot(x, b.snapshot));
  END IF;
  RETURN deleted;
END
$$;

