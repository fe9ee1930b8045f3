// Indexes for per-user reads of chat_rooms (hydration, verify, the seed's fallback query).
// CREATE INDEX CONCURRENTLY cannot run in a transaction, so this migration opts out of one,
// and a live table keeps taking writes while they build. A failed concurrent build leaves an
// INVALID index behind that IF NOT EXISTS would accept, so such a leftover is dropped first.
const indexes = [
  ['unread_sync_chat_rooms_user_id_idx', 'user_id'],
  ['unread_sync_chat_rooms_company_id_idx', 'company_id'],
];

export const up = async (pgm) => {
  pgm.noTransaction();
  const invalid = await pgm.db.select(
    `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE NOT i.indisvalid AND c.relname IN (${indexes.map(([n]) => `'${n}'`).join(', ')})`,
  );
  for (const { relname } of invalid) pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS public.${relname}`);
  for (const [name, column] of indexes) {
    pgm.sql(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${name} ON public.chat_rooms (${column})`);
  }
};

export const down = (pgm) => {
  pgm.noTransaction();
  for (const [name] of indexes) pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS public.${name}`);
};
