import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['bench/**', 'test/faults/**', 'test/cluster/**', 'test/supabase-live/**', 'node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Real services on 2 cores: a couple of files at a time keeps timings honest.
    maxWorkers: 2,
  },
});
