import { defineConfig } from 'vitest/config';

// Every suite finds Postgres and Redis once per run (env URLs, local defaults, or testcontainers).
const services = { globalSetup: ['test/support/global-setup.ts'], pool: 'forks' } as const;

/**
 * One config, three projects: `npm test` runs `unit`, `npm run test:faults` and
 * `npm run test:cluster` the others (`vitest run --project <name>`). Projects differ in
 * parallelism, so each has its own `sequence.groupOrder` (vitest requires it when run together).
 */
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          ...services,
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['bench/**', 'test/faults/**', 'test/cluster/**', 'test/supabase-live/**', 'node_modules/**'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          // Real services on 2 cores: a couple of files at a time keeps timings honest.
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        // The fault suite: one file at a time (it restarts servers and kills processes), long timeouts.
        test: {
          ...services,
          name: 'faults',
          include: ['test/faults/**/*.test.ts'],
          maxWorkers: 1,
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 120_000,
          sequence: { groupOrder: 1 },
        },
      },
      {
        /**
         * The scale-out suite against a real 3-master / 3-replica Redis Cluster that each file
         * starts on its own loopback ports (see test/cluster/cluster.ts). Files run one at a time:
         * six redis-servers, Postgres, bridges and the load share two cores.
         */
        test: {
          ...services,
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 300_000,
          hookTimeout: 120_000,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
