-- Supabase copy of migrations/1764000000001_chat-rooms-indexes.js (test/supabase-folder.test.ts checks it).
-- The Supabase CLI runs each migration file in a transaction, where CREATE INDEX CONCURRENTLY is not
-- allowed, so the indexes are built plainly here: that takes a SHARE lock on chat_rooms (writes wait)
-- for the build. On a large live table, build them first by hand, outside a transaction:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS unread_sync_chat_rooms_user_id_idx ON public.chat_rooms (user_id);
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS unread_sync_chat_rooms_company_id_idx ON public.chat_rooms (company_id);
-- and this file then does nothing (IF NOT EXISTS).
CREATE INDEX IF NOT EXISTS unread_sync_chat_rooms_user_id_idx ON public.chat_rooms (user_id);
CREATE INDEX IF NOT EXISTS unread_sync_chat_rooms_company_id_idx ON public.chat_rooms (company_id);
