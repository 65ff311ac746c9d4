import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'firmware-tools/**/*.test.ts', 'test/**/*.test.ts'],
    // test/system holds the QEMU tier (run.sh, not vitest) and judge.test.ts, which is a vitest test.
    exclude: ['dist/**', 'node_modules/**'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file starts its own swtpm/KVM resources; two cores.
    pool: 'forks',
    maxWorkers: 2,
  },
});
