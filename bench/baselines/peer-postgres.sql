-- Bench peer (b), issue 13: Postgres only. A row trigger on chat_rooms keeps a per-user totals
-- table (upsert by delta); badges are read from it, nothing is pushed. Everything lives in schema
-- peer_pg; the trigger is created DISABLED and the bench enables it only for the peer's own
-- phases (peers.ts). Dropping the schema (CASCADE) removes the trigger too.
DROP SCHEMA IF EXISTS peer_pg CASCADE;
CREATE SCHEMA peer_pg;

CREATE TABLE peer_pg.user_totals (user_id uuid PRIMARY KEY, total bigint NOT NULL);

CREATE FUNCTION peer_pg.add(u uuid, delta integer) RETURNS void LANGUAGE sql AS $$
  INSERT INTO peer_pg.user_totals AS t (user_id, total) VALUES (u, delta)
  ON CONFLICT (user_id) DO UPDATE SET total = t.total + excluded.total
$$;

CREATE FUNCTION peer_pg.capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  ou integer := 0; nu integer := 0; oc integer := 0; nc integer := 0;
  o_user uuid; n_user uuid; o_comp uuid; n_comp uuid;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    o_user := OLD.user_id; o_comp := OLD.company_id;
    IF OLD.is_active THEN ou := coalesce(OLD.user_unread_count, 0); oc := coalesce(OLD.company_unread_count, 0); END IF;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    n_user := NEW.user_id; n_comp := NEW.company_id;
    IF NEW.is_active THEN nu := coalesce(NEW.user_unread_count, 0); nc := coalesce(NEW.company_unread_count, 0); END IF;
  END IF;
  IF o_user IS NOT DISTINCT FROM n_user THEN
    IF n_user IS NOT NULL AND nu <> ou THEN PERFORM peer_pg.add(n_user, nu - ou); END IF;
  ELSE
    IF o_user IS NOT NULL AND ou <> 0 THEN PERFORM peer_pg.add(o_user, -ou); END IF;
    IF n_user IS NOT NULL AND nu <> 0 THEN PERFORM peer_pg.add(n_user, nu); END IF;
  END IF;
  IF o_comp IS NOT DISTINCT FROM n_comp THEN
    IF n_comp IS NOT NULL AND nc <> oc THEN PERFORM peer_pg.add(n_comp, nc - oc); END IF;
  ELSE
    IF o_comp IS NOT NULL AND oc <> 0 THEN PERFORM peer_pg.add(o_comp, -oc); END IF;
    IF n_comp IS NOT NULL AND nc <> 0 THEN PERFORM peer_pg.add(n_comp, nc); END IF;
  END IF;
  RETURN NULL;
END $$;

-- Totals as of install, so every later write is an UPDATE of an existing row, as in steady state.
INSERT INTO peer_pg.user_totals (user_id, total)
SELECT owner, sum(unread) FROM (
  SELECT user_id AS owner, CASE WHEN is_active THEN coalesce(user_unread_count, 0) ELSE 0 END AS unread
    FROM public.chat_rooms WHERE user_id IS NOT NULL
  UNION ALL
  SELECT company_id, CASE WHEN is_active THEN coalesce(company_unread_count, 0) ELSE 0 END
    FROM public.chat_rooms WHERE company_id IS NOT NULL
) s GROUP BY owner;

CREATE TRIGGER peer_pg_capture AFTER INSERT OR UPDATE OR DELETE ON public.chat_rooms
  FOR EACH ROW EXECUTE FUNCTION peer_pg.capture();
ALTER TABLE public.chat_rooms DISABLE TRIGGER peer_pg_capture;
