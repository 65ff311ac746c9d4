import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'firmware-tools/**/*.test.ts', 'test/**/*.test.ts'],
    exclude: ['dist/**', 'node_modules/**', 'test/system/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file starts its own swtpm/KVM resources; two cores.
    pool: 'forks',
    maxWorkers: 2,
  },
});
