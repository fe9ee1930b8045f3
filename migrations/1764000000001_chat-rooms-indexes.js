// Indexes for per-user reads of chat_rooms (hydration, verify, the seed's fallback query).
// CREATE INDEX CONCURRENTLY cannot run in a transaction, so this migration opts out of one,
// and a live table keeps taking writes while they build. A failed concurrent build leaves an
// INVALID index behind that IF NOT EXISTS would accept, so such a leftover is dropped first.
// A partitioned chat_rooms cannot be indexed concurrently: the parent gets an index ON ONLY
// itself (no build), each leaf partition its own concurrent build, attached to the parent's (or
// to its sub-partitioned parent's) index, which becomes valid once every partition is attached.
// Partitions created later get the index from the parent automatically.
const indexes = [
  ['unread_sync_chat_rooms_user_id_idx', 'user_id'],
  ['unread_sync_chat_rooms_company_id_idx', 'company_id'],
];

/** Name of a partition's index: stable per partition (its oid) and short enough for any table name. */
const partitionIndex = (name, oid) => `${name.replace(/_idx$/, '')}_p${oid}`;

export const up = async (pgm) => {
  pgm.noTransaction();
  const tree = await pgm.db.select(
    `SELECT t.relid::oid AS oid, t.relid::regclass::text AS rel, quote_ident(n.nspname) AS schema,
            t.parentrelid::oid AS parent, t.isleaf
       FROM pg_partition_tree(to_regclass('public.chat_rooms')) t
       JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE t.level > 0 ORDER BY t.level`,
  );
  const invalid = await pgm.db.select(
    `SELECT c.relname, quote_ident(n.nspname) AS schema
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE NOT i.indisvalid AND c.relkind = 'i'
        AND (c.relname IN (${indexes.map(([n]) => `'${n}'`).join(', ')}) OR c.relname LIKE 'unread\\_sync\\_chat\\_rooms\\_%\\_p%')`,
  );
  for (const { relname, schema } of invalid) pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS ${schema}.${relname}`);
  if (tree.length === 0) {
    for (const [name, column] of indexes) {
      pgm.sql(`CREATE INDEX CONCURRENTLY IF NOT EXISTS ${name} ON public.chat_rooms (${column})`);
    }
    return;
  }
  // Partitioned: the root's oid names the parent index; every other level is named by its oid.
  const [{ oid: root } = { oid: null }] = await pgm.db.select(`SELECT 'public.chat_rooms'::regclass::oid AS oid`);
  for (const [name, column] of indexes) {
    // An index lives in its table's schema.
    const schemaOf = new Map(tree.map((p) => [String(p.oid), p.schema]));
    const indexOf = (oid) =>
      String(oid) === String(root) ? `public.${name}` : `${schemaOf.get(String(oid))}.${partitionIndex(name, oid)}`;
    pgm.sql(`CREATE INDEX IF NOT EXISTS ${name} ON ONLY public.chat_rooms (${column})`);
    for (const p of tree) {
      const own = partitionIndex(name, p.oid);
      pgm.sql(
        p.isleaf
          ? `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${own} ON ${p.rel} (${column})`
          : `CREATE INDEX IF NOT EXISTS ${own} ON ONLY ${p.rel} (${column})`,
      );
      // Attaching an index that is already attached to this parent is a no-op (a rerun after a failure).
      pgm.sql(`ALTER INDEX ${indexOf(p.parent)} ATTACH PARTITION ${p.schema}.${own}`);
    }
  }
};

export const down = async (pgm) => {
  pgm.noTransaction();
  const [row] = await pgm.db.select(
    `SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('public.chat_rooms')), false) AS partitioned`,
  );
  // A partitioned index cannot be dropped concurrently; dropping it drops the partitions' indexes.
  for (const [name] of indexes) {
    pgm.sql(row?.partitioned ? `DROP INDEX IF EXISTS public.${name}` : `DROP INDEX CONCURRENTLY IF EXISTS public.${name}`);
  }
};
