import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { available, POSTGRES_ADMIN_URL } from '../support/dialects.js'

const run = promisify(execFile)
const SOAK = fileURLToPath(new URL('../../soak/run.mjs', import.meta.url))

// pgbench and several connections: PostgreSQL only. `npm run soak` is the long version.
describe('soak (pgbench TPC-B-like while matview keeps views fresh)', () => {
  it('keeps every view equal to its query through a short pgbench run', async (ctx) => {
    if (!(await available('postgres'))) return ctx.skip()
    const { stdout } = await run(
      process.execPath,
      [SOAK, '--seconds', '3', '--scale', '1', '--clients', '4', '--no-write', '--json'],
      { env: { ...process.env, MATVIEW_BENCH_SERVER: POSTGRES_ADMIN_URL }, timeout: 120_000 },
    )
    const report = JSON.parse(stdout.trim().split('\n').at(-1)!)
    expect(report.checks.map((c: { view: string }) => c.view).sort()).toEqual([
      'soak_accounts',
      'soak_branch_activity',
      'soak_branch_balances',
      'soak_teller_activity',
    ])
    for (const check of report.checks) expect(check, check.view).toMatchObject({ equal: true })
    expect(report.failedUpdates).toBe(0)
    expect(report.updates).toBeGreaterThan(0)
    expect(report.rows).toBeGreaterThan(0)
    expect(report.tpsWith).toBeGreaterThan(0)
  }, 150_000)
})
