-- Bench peer (a), issue 13: the minimal LISTEN/NOTIFY design. A row trigger on chat_rooms sends
-- pg_notify('peer_notify', '<user> <room> <delta> <new value>') for each side whose unread
-- changed; a Node listener (peers.ts) applies it with HINCRBY (total) and HSET (room) in Redis.
-- No log, no versions: a notification sent while nobody listens is lost. Everything lives in
-- schema peer_notify; the trigger is created DISABLED and the bench enables it only for the
-- peer's own phases (peers.ts). Dropping the schema (CASCADE) removes the trigger too.
DROP SCHEMA IF EXISTS peer_notify CASCADE;
CREATE SCHEMA peer_notify;

CREATE FUNCTION peer_notify.capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ou integer := 0; nu integer := 0; oc integer := 0; nc integer := 0;
  o_user uuid; n_user uuid; o_comp uuid; n_comp uuid; room text;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    o_user := OLD.user_id; o_comp := OLD.company_id; room := OLD.id::text;
    IF OLD.is_active THEN ou := coalesce(OLD.user_unread_count, 0); oc := coalesce(OLD.company_unread_count, 0); END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    n_user := NEW.user_id; n_comp := NEW.company_id; room := NEW.id::text;
    IF NEW.is_active THEN nu := coalesce(NEW.user_unread_count, 0); nc := coalesce(NEW.company_unread_count, 0); END IF;
  END IF;
  -- Each side: same owner -> one delta; owner changed -> the old owner loses, the new one gains.
  IF o_user IS NOT DISTINCT FROM n_user THEN
    IF n_user IS NOT NULL AND nu <> ou THEN PERFORM pg_catalog.pg_notify('peer_notify', concat_ws(' ', n_user, room, nu - ou, nu)); END IF;
  ELSE
    IF o_user IS NOT NULL AND ou <> 0 THEN PERFORM pg_catalog.pg_notify('peer_notify', concat_ws(' ', o_user, room, -ou, 0)); END IF;
    IF n_user IS NOT NULL AND nu <> 0 THEN PERFORM pg_catalog.pg_notify('peer_notify', concat_ws(' ', n_user, room, nu, nu)); END IF;
  END IF;
  IF o_comp IS NOT DISTINCT FROM n_comp THEN
    IF n_comp IS NOT NULL AND nc <> oc THEN PERFORM pg_catalog.pg_notify('peer_notify', concat_ws(' ', n_comp, room, nc - oc, nc)); END IF;
  ELSE
    IF o_comp IS NOT NULL AND oc <> 0 THEN PERFORM pg_catalog.pg_notify('peer_notify', concat_ws(' ', o_comp, room, -oc, 0)); END IF;
    IF n_comp IS NOT NULL AND nc <> 0 THEN PERFORM pg_catalog.pg_notify('peer_notify', concat_ws(' ', n_comp, room, nc, nc)); END IF;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER peer_notify_capture AFTER INSERT OR UPDATE OR DELETE ON public.chat_rooms
  FOR EACH ROW EXECUTE FUNCTION peer_notify.capture();
ALTER TABLE public.chat_rooms DISABLE TRIGGER peer_notify_capture;
