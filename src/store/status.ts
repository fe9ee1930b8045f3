// Sentinel values the store's Lua scripts return in place of a count. Each script's header lists
// the same names and values under "Statuses:", and declares them as locals of the same names;
// test/lua-status.test.ts checks the three agree.

/** applyChanges.lua: the `applied` slot of a user's reply. */
export const ApplyStatus = {
  /** The user is not cached (unknown): nothing was written. */
  UNKNOWN_USER: -1,
} as const;

/** hydrate.lua: the `total` slot of a user's reply. */
export const HydrateStatus = {
  /** The hydration's snapshot is older than the user's state (or the prefix's reset floor): not written. */
  REFUSED: -1,
} as const;
