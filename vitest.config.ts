import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Namespace tests build hosts with fixed names and measure traffic: one file at a time.
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // default for people, json for .ci/run's closing 'N passed, N failed' line
    reporters: ['default', ['json', { outputFile: 'test-results/vitest.json' }]],
  },
});
