import { defineConfig } from 'vitest/config';

/**
 * `npm run test:cluster`: the scale-out suite against a real 3-master / 3-replica Redis Cluster
 * that each file starts on its own loopback ports (see cluster.ts). Files run one at a time:
 * six redis-servers, Postgres, bridges and the load share two cores.
 */
export default defineConfig({
  test: {
    include: ['test/cluster/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 120_000,
  },
});
