-- Demo data for `supabase db reset` (runs after supabase/migrations/).
-- Three users (password "password"), a company account and a few rooms with unread messages.
-- Per-user badge topics (unread-sync:user:<uuid>) are switched on so a signed-in demo user can
-- subscribe to their own badge from the browser.

DO $$
BEGIN
  -- auth.users exists on Supabase (and in `supabase start`); plain Postgres has no auth schema.
  IF to_regclass('auth.users') IS NOT NULL THEN
    INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                            raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
    SELECT '00000000-0000-0000-0000-000000000000', u.id, 'authenticated', 'authenticated', u.email,
           extensions.crypt('password', extensions.gen_salt('bf')), now(),
           '{"provider":"email","providers":["email"]}', '{}', now(), now()
      FROM (VALUES
        ('11111111-1111-4111-8111-111111111111'::uuid, 'ana@example.com'),
        ('22222222-2222-4222-8222-222222222222'::uuid, 'ben@example.com'),
        ('33333333-3333-4333-8333-333333333333'::uuid, 'cleo@example.com'),
        ('99999999-9999-4999-8999-999999999999'::uuid, 'support@example.com')) AS u(id, email)
    ON CONFLICT (id) DO NOTHING;
  END IF;
END
$$;

-- user_id: the customer; company_id: the company account answering in the room.
INSERT INTO public.chat_rooms (id, user_id, company_id, user_unread_count, company_unread_count, is_active)
VALUES
  ('aaaaaaaa-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999999', 3, 0, true),
  ('aaaaaaaa-0000-4000-8000-000000000002', '11111111-1111-4111-8111-111111111111', '99999999-9999-4999-8999-999999999999', 1, 2, true),
  ('aaaaaaaa-0000-4000-8000-000000000003', '22222222-2222-4222-8222-222222222222', '99999999-9999-4999-8999-999999999999', 0, 5, true),
  ('aaaaaaaa-0000-4000-8000-000000000004', '22222222-2222-4222-8222-222222222222', '99999999-9999-4999-8999-999999999999', 7, 0, false),
  ('aaaaaaaa-0000-4000-8000-000000000005', '33333333-3333-4333-8333-333333333333', '99999999-9999-4999-8999-999999999999', 4, 1, true)
ON CONFLICT (id) DO NOTHING;

INSERT INTO unread_sync.meta (key, value) VALUES ('realtime_user_topics', 'on')
ON CONFLICT (key) DO UPDATE SET value = excluded.value;
