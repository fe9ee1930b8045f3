-- Up section of migrations/1764000000005_user-rooms-rpc.sql, byte for byte (test/supabase-folder.test.ts checks it).
-- Supabase-direct mode (no socket server): the bridge broadcasts each user's room changes to the
-- private topic 'unread-sync:user:<uuid>' (UNREAD_USER_TOPICS=true), and a client builds its
-- initial state with this RPC. Installed only where Supabase's `auth` and `realtime` schemas exist.
-- It returns the signed-in user's rooms with unread > 0 and the statement's snapshot: a client
-- drops every broadcast whose xid is visible in that snapshot (already in the state), and merges
-- the others per room by version (the change-log id, in commit order per room). SECURITY DEFINER:
-- `authenticated` has no rights on chat_rooms' other users or on schema unread_sync; auth.uid()
-- limits the answer to the caller. STABLE: every read uses the calling statement's snapshot,
-- which is what pg_current_snapshot() returns.
DO $$
BEGIN
  IF to_regnamespace('auth') IS NULL OR to_regprocedure('auth.uid()') IS NULL
     OR to_regnamespace('realtime') IS NULL THEN
    RAISE NOTICE 'unread-sync: no Supabase auth/realtime schema, unread_sync_my_rooms() not installed';
    RETURN;
  END IF;

  CREATE FUNCTION public.unread_sync_my_rooms() RETURNS jsonb
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
  AS $f$
    SELECT jsonb_build_object(
      'userId', me.id,
      'snapshot', pg_current_snapshot()::text,
      'seq', (SELECT coalesce(last_value, 0) FROM unread_sync.changes_id_seq),
      'rooms', coalesce((
        -- One index scan per side, as the bridge's hydration reads it.
        SELECT jsonb_object_agg(x.room_id, x.unread) FROM (
          SELECT r.id::text AS room_id, e.unread
            FROM public.chat_rooms r
           CROSS JOIN LATERAL unread_sync.room_unread(
             r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
           WHERE r.user_id = me.id AND e.user_id = me.id AND e.unread > 0
          UNION ALL
          SELECT r.id::text, e.unread
            FROM public.chat_rooms r
           CROSS JOIN LATERAL unread_sync.room_unread(
             r.user_id, r.company_id, r.user_unread_count, r.company_unread_count, r.is_active) e
           WHERE r.company_id = me.id AND e.user_id = me.id AND e.unread > 0
             AND r.company_id IS DISTINCT FROM r.user_id) x), '{}'::jsonb))
      FROM (SELECT auth.uid() AS id) me
     WHERE me.id IS NOT NULL
  $f$;
  REVOKE ALL ON FUNCTION public.unread_sync_my_rooms() FROM PUBLIC;
  GRANT EXECUTE ON FUNCTION public.unread_sync_my_rooms() TO authenticated;
END
$$;

