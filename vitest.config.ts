import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

/**
 * The long tier: the pgbench soak and the SIGKILL loops (MATVIEW_FAULTS_SECONDS of kills).
 * `npm test` runs the rest; `npm run test:long` runs these; CI runs both (README, Tests).
 */
const LONG = [
  'test/soak/**/*.test.ts',
  'test/proof/faults.test.ts',
  'test/proof/faults-pglite.test.ts',
]

export default defineConfig({
  // Examples import the package by name, as users do.
  resolve: { alias: { matview: fileURLToPath(new URL('./src/index.ts', import.meta.url)) } },
  test: {
    // Ceilings, not expectations: tests wait on conditions, and a loaded 2-core machine is slow.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: more workers than that only adds PGlite start-up contention.
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'main', include: ['test/**/*.test.ts'], exclude: LONG } },
      { extends: true, test: { name: 'long', include: LONG } },
    ],
  },
})
