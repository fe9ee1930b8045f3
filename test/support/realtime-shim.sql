-- TEST-ONLY shim of the Supabase Realtime tenant schema.
--
-- NEVER ship this in migrations/: on a real Supabase project the Realtime
-- service owns the `realtime` schema and creates it itself. This file exists so
-- tests can run against a plain PostgreSQL 15 with test/support/realtime-server.ts
-- standing in for the Realtime server.
--
-- Mirrors supabase/realtime lib/realtime/tenants/repo/migrations (state as of
-- 20260707120000_restrict_realtime_schema): roles, realtime.messages (range
-- partitioned by inserted_at, no partition is created here - see the "daily
-- partition trap" below), realtime.topic(), realtime.send(), realtime.send_binary(),
-- realtime.broadcast_changes(), RLS + grants.
--
-- Everything under the `realtime_shim` schema is NOT part of Supabase: it is the
-- plumbing the stand-in server needs (partition helper and a NOTIFY trigger
-- replacing the real server's temporary logical replication slot).
--
-- Idempotent: safe to apply more than once and from concurrently running test
-- files (roles are cluster-wide, so their creation tolerates races).

-- ---------------------------------------------------------------------------
-- Roles (cluster-wide). Same attributes as Supabase's: the API roles cannot log
-- in; service_role bypasses RLS, which is how it "sees everything".
-- ---------------------------------------------------------------------------
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN NOINHERIT;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- raced another test file
END $$;

DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN NOINHERIT;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supabase_realtime_admin') THEN
    CREATE ROLE supabase_realtime_admin NOINHERIT NOLOGIN NOREPLICATION;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;

CREATE SCHEMA IF NOT EXISTS realtime;
GRANT USAGE ON SCHEMA realtime TO postgres, anon, authenticated, service_role;
GRANT ALL ON SCHEMA realtime TO supabase_realtime_admin WITH GRANT OPTION;

-- ---------------------------------------------------------------------------
-- auth.uid() / auth.role() / auth.jwt(): Supabase provides these and RLS
-- policies on realtime.messages usually call them. Created only when missing so
-- a richer auth shim owned by another test file wins.
-- ---------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

DO $$ BEGIN
  IF to_regprocedure('auth.uid()') IS NULL THEN
    CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $f$
      SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $f$;
  END IF;
  IF to_regprocedure('auth.role()') IS NULL THEN
    CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $f$
      SELECT coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $f$;
  END IF;
  IF to_regprocedure('auth.jwt()') IS NULL THEN
    CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $f$
      SELECT coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $f$;
  END IF;
EXCEPTION WHEN duplicate_function THEN NULL;
END $$;

-- ---------------------------------------------------------------------------
-- realtime.messages: exact columns/defaults of the real table. It is range
-- partitioned by inserted_at and the real server (Tenants.create_messages_partitions,
-- run on connect and by the janitor) creates one partition per UTC day.
-- THE DAILY PARTITION TRAP: with no partition covering now(), every insert fails
-- ("no partition of relation "messages" found for row", SQLSTATE 23514);
-- realtime.send() swallows that into a WARNING, so the caller's transaction
-- commits and the broadcast silently never happens, and private channel joins
-- fail with "MissingPartition". Partitions are therefore NOT created here: call
-- realtime_shim.create_messages_partitions() (startRealtimeServer does it
-- unless told not to, like the real server does).
-- ---------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS realtime.messages (
  topic text NOT NULL,
  extension text NOT NULL,
  payload jsonb,
  event text,
  private boolean DEFAULT false,
  updated_at timestamp without time zone NOT NULL DEFAULT now(),
  inserted_at timestamp without time zone NOT NULL DEFAULT now(),
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  binary_payload bytea,
  CONSTRAINT messages_pkey PRIMARY KEY (id, inserted_at),
  CONSTRAINT messages_payload_exclusive CHECK (payload IS NULL OR binary_payload IS NULL)
) PARTITION BY RANGE (inserted_at);

CREATE INDEX IF NOT EXISTS messages_inserted_at_topic_index
  ON realtime.messages (inserted_at DESC, topic)
  WHERE extension = 'broadcast' AND private IS TRUE;

ALTER TABLE realtime.messages OWNER TO supabase_realtime_admin;
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO postgres, anon, authenticated, service_role;

-- ---------------------------------------------------------------------------
-- Functions (bodies as in the latest real migrations).
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text AS $$
select nullif(current_setting('realtime.topic', true), '')::text;
$$ LANGUAGE sql STABLE;

-- 20260605120000_rename_broadcast_send_warning: not SECURITY DEFINER, so the
-- INSERT runs as the caller (RLS INSERT policies apply to anon/authenticated).
-- The inner BEGIN/EXCEPTION block is a subtransaction: any failure (RLS, missing
-- partition, ...) is downgraded to a WARNING and the caller's transaction commits.
CREATE OR REPLACE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true ) RETURNS void
AS $$
DECLARE
  generated_id uuid;
  final_payload jsonb;
BEGIN
  BEGIN
    generated_id := gen_random_uuid();

    -- Check if payload has an 'id' key, if not, add the generated UUID
    IF payload ? 'id' THEN
      final_payload := payload;
    ELSE
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    END IF;

    -- Set the topic configuration
    EXECUTE format('SET LOCAL realtime.topic TO %L', topic);

    INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
    VALUES (generated_id, final_payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
  END;
END;
$$
LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION realtime.send_binary(
  payload bytea,
  event text,
  topic text,
  private boolean DEFAULT true
) RETURNS void AS $$
DECLARE
  generated_id uuid;
BEGIN
  BEGIN
    generated_id := gen_random_uuid();

    EXECUTE format('SET LOCAL realtime.topic TO %L', topic);

    INSERT INTO realtime.messages (id, binary_payload, event, topic, private, extension)
    VALUES (generated_id, payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
  END;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION realtime.broadcast_changes (topic_name text, event_name text, operation text, table_name text, table_schema text, NEW record, OLD record, level text DEFAULT 'ROW')
    RETURNS void
    AS $$
DECLARE
    -- Declare a variable to hold the JSONB representation of the row
    row_data jsonb := '{}'::jsonb;
BEGIN
    IF level = 'STATEMENT' THEN
        RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
    END IF;
    -- Check the operation type and handle accordingly
    IF operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE' THEN
        row_data := jsonb_build_object('old_record', OLD, 'record', NEW, 'operation', operation, 'table', table_name, 'schema', table_schema);
        PERFORM realtime.send (row_data, event_name, topic_name);
    ELSE
        RAISE EXCEPTION 'Unexpected operation type: %', operation;
    END IF;
EXCEPTION
    WHEN OTHERS THEN
        RAISE EXCEPTION 'Failed to process the row: %', SQLERRM;
END;
$$
LANGUAGE plpgsql;

ALTER FUNCTION realtime.topic() OWNER TO supabase_realtime_admin;
ALTER FUNCTION realtime.send(jsonb, text, text, boolean) OWNER TO supabase_realtime_admin;
ALTER FUNCTION realtime.send_binary(bytea, text, text, boolean) OWNER TO supabase_realtime_admin;
ALTER FUNCTION realtime.broadcast_changes(text, text, text, text, text, record, record, text) OWNER TO supabase_realtime_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA realtime TO postgres, anon, authenticated, service_role;

-- ===========================================================================
-- SHIM-ONLY below: not part of Supabase.
-- ===========================================================================
CREATE SCHEMA IF NOT EXISTS realtime_shim;
COMMENT ON SCHEMA realtime_shim IS
  'TEST-ONLY plumbing for test/support/realtime-server.ts; does not exist on Supabase';

-- Same naming/bounds as the real server's create_messages_partitions: one
-- partition per UTC day, realtime.messages_YYYY_MM_DD, default window is
-- yesterday .. today+3. Returns the partitions it created.
CREATE OR REPLACE FUNCTION realtime_shim.create_messages_partitions(
  from_day date DEFAULT ((now() AT TIME ZONE 'utc')::date - 1),
  to_day date DEFAULT ((now() AT TIME ZONE 'utc')::date + 3)
) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
  d date;
  part text;
BEGIN
  FOR d IN SELECT generate_series(from_day, to_day, interval '1 day')::date LOOP
    part := 'messages_' || to_char(d, 'YYYY_MM_DD');
    IF to_regclass(format('realtime.%I', part)) IS NULL THEN
      BEGIN
        EXECUTE format(
          'CREATE TABLE realtime.%I PARTITION OF realtime.messages FOR VALUES FROM (%L) TO (%L)',
          part, d::text, (d + 1)::text);
        EXECUTE format('ALTER TABLE realtime.%I OWNER TO supabase_realtime_admin', part);
        RETURN NEXT part;
      EXCEPTION WHEN duplicate_table THEN NULL; -- another server created it first
      END;
    END IF;
  END LOOP;
END;
$$;

-- For tests of the daily partition trap: drops every partition of realtime.messages.
CREATE OR REPLACE FUNCTION realtime_shim.drop_messages_partitions() RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
  part regclass;
BEGIN
  FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'realtime.messages'::regclass LOOP
    EXECUTE format('DROP TABLE %s', part);
    RETURN NEXT part::text;
  END LOOP;
END;
$$;

-- Stand-in for the real server's logical replication stream. NOTIFY is queued
-- at INSERT time but only delivered on COMMIT, so rolled-back sends (and the
-- server's own rolled-back authorization probes) are never seen - the same
-- visibility a replication slot gives. Payloads are capped (~8000 bytes), so
-- large rows are announced by id only and fetched by the server.
CREATE OR REPLACE FUNCTION realtime_shim.notify_message() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  body text;
BEGIN
  body := jsonb_build_object(
    'id', NEW.id,
    'inserted_at', NEW.inserted_at,
    'topic', NEW.topic,
    'extension', NEW.extension,
    'event', NEW.event,
    'private', NEW.private,
    'payload', NEW.payload,
    'binary_payload', encode(NEW.binary_payload, 'base64')
  )::text;
  IF octet_length(body) > 7000 THEN
    body := jsonb_build_object('id', NEW.id, 'inserted_at', NEW.inserted_at, 'fetch', true)::text;
  END IF;
  PERFORM pg_notify('realtime_shim_messages', body);
  RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS realtime_shim_notify ON realtime.messages;
CREATE TRIGGER realtime_shim_notify
  AFTER INSERT ON realtime.messages
  FOR EACH ROW EXECUTE FUNCTION realtime_shim.notify_message();
