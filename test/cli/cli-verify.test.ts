import { type Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { runCli, writeCustomerTotalsConfig } from '../support/cli.js'
import { useCliDatabase } from '../support/cli-database.js'
import { DIALECTS } from '../support/dialects.js'

// `matview verify` as a user runs it: the built bin, a config file, exit codes and output.

// Several CLI processes, each opening the database: slow when the machine is busy.
const TIMEOUT = 180_000

describe.each(DIALECTS)('matview verify (CLI) on %s', (dialect) => {
  const database = useCliDatabase(dialect)

  const withDb = (fn: (db: Kysely<any>) => Promise<unknown>) => database.use(fn)

  const setUp = async () => {
    await withDb((db) => createDemoSchema(db, { customers: 20, orders: 200 }))
    writeCustomerTotalsConfig(database.dir, database.spec)
    const created = await runCli(['create'], database.dir)
    expect(created.code, created.stdout + created.stderr).toBe(0)
    return database.dir
  }

  it(
    'exits 0 when equal, 3 on drift naming the keys, and 0 after --repair',
    async () => {
      const dir = await setUp()
      const equal = await runCli(['verify'], dir)
      expect(equal.stderr).toBe('')
      expect(equal.code).toBe(0)
      // Customers 1, 6, 11 and 16 have no paid order.
      expect(equal.stdout).toMatch(/^customer_totals: equal, 16 rows in 1 range, \S+\n$/)

      await withDb(async (db) => {
        await sql`UPDATE customer_totals SET region = 'x' WHERE customer_id IN (3, 4)`.execute(db)
        await sql`DELETE FROM customer_totals WHERE customer_id = 7`.execute(db)
      })
      const drift = await runCli(['verify', 'customer_totals', '--sample', '1'], dir)
      expect(drift.code).toBe(3)
      expect(drift.stdout).toMatch(
        /^customer_totals: drift, 1 missing \(customer_id=7\), 2 different \(customer_id=3; …\), 15 rows in 1 range, /,
      )
      const json = await runCli(['verify', '--json'], dir)
      expect(json.code).toBe(3)
      expect(JSON.parse(json.stdout)).toMatchObject({
        ok: false,
        views: [
          {
            view: 'customer_totals',
            outcome: 'drift',
            missing: { count: 1, first: [{ customer_id: 7 }] },
            extra: { count: 0, first: [] },
            different: { count: 2, first: [{ customer_id: 3 }, { customer_id: 4 }] },
            pending: 0,
            rows: 15,
          },
        ],
      })

      const repaired = await runCli(['verify', '--repair'], dir)
      expect(repaired.code).toBe(0)
      expect(repaired.stdout).toMatch(/^customer_totals: repaired, 1 missing .*, 3 repaired, /)
      expect((await runCli(['verify'], dir)).code).toBe(0)
    },
    TIMEOUT,
  )

  it(
    'exits 1 for a view it cannot verify and 2 for an unknown one',
    async () => {
      const dir = await setUp()
      await withDb((db) => sql`TRUNCATE orders`.execute(db))
      const truncated = await runCli(['verify'], dir)
      expect(truncated.code).toBe(1)
      expect(truncated.stdout).toMatch(
        /^customer_totals: not verified: needs rebuild \(.*\): run "matview rebuild customer_totals"\n$/,
      )
      const unknown = await runCli(['verify', 'nope'], dir)
      expect(unknown.code).toBe(2)
      expect(unknown.stderr.trim()).toBe(
        'matview: unknown view "nope"; known views: customer_totals',
      )
    },
    TIMEOUT,
  )
})
