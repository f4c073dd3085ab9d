import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import {
  CUSTOMER_TOTALS_QUERY as QUERY,
  runCli,
  writeCustomerTotalsConfig,
} from '../support/cli.js'
import { available, freshDatabase, type TestDatabase } from '../support/dialects.js'

// `matview create`, `update` and `status` on a declarative view, as a user runs them: the built
// bin as a subprocess, a config file importing the built package, a PostgreSQL database.

describe('matview CLI with a declarative view on PostgreSQL', () => {
  let database: TestDatabase | undefined
  afterEach(async () => {
    await database?.close()
  })

  it('create backfills, status shows pending keys and lag, update applies, a changed definition is refused', async () => {
    if (!(await available('postgres'))) return
    database = await freshDatabase('postgres')
    await createDemoSchema(database.db, { customers: 100, orders: 1000 })
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeCustomerTotalsConfig(dir, database.url!, QUERY)

    const dryRun = await runCli(['update', '--dry-run'], dir)
    expect(dryRun.code).toBe(0)
    expect(dryRun.stdout).toMatch(/customer_totals: would create and backfill it/)
    const created = await runCli(['create'], dir)
    expect(created.stderr).toBe('')
    expect(created.code).toBe(0)
    expect(created.stdout).toMatch(/customer_totals: done \(created, backfilled\), \+\d+ ~0 -0/)
    const again = await runCli(['create'], dir)
    expect(again.stdout).toMatch(/customer_totals: done, \+0 ~0 -0/)

    await sql`UPDATE orders SET amount_cents = amount_cents + 5 WHERE customer_id <= 30`.execute(
      database.db,
    )
    const status = await runCli(['status', '--json'], dir)
    expect(status.code).toBe(0)
    const [view] = JSON.parse(status.stdout) as Array<{
      state: string
      pending: { total: number; lagSeconds: number; targetRows: number }
    }>
    expect(view!.state).toBe('ready')
    expect(view!.pending.total).toBe(30)
    expect(view!.pending.lagSeconds).toBeGreaterThanOrEqual(0)
    const table = await runCli(['status'], dir)
    expect(table.stdout).toMatch(/customer_totals\s+declarative\s+ready\s+30 \(keys 30\)/)

    const update = await runCli(['update'], dir)
    expect(update.code).toBe(0)
    expect(update.stdout).toMatch(/customer_totals: done, \+0 ~\d+ -0 in 2 batches/)

    writeCustomerTotalsConfig(dir, database.url!, `${QUERY} HAVING count(*) > 1`)
    const changed = await runCli(['update'], dir)
    expect(changed.code).toBe(1)
    expect(changed.stdout).toMatch(
      /customer_totals: failed.*definition changed.*run "matview rebuild customer_totals"/,
    )
  })
})
