import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { connect } from '../../src/dialects/connect.js'
import { runCli, writeCustomerTotalsConfig } from '../support/cli.js'
import { DIALECTS, freshDatabase, type TestDatabase } from '../support/dialects.js'

// `matview sql` as a team with its own migration tool uses it: print, apply the script with
// another client, then `matview create`.
const QUERY = `SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid'
  GROUP BY o.customer_id, c.region`

// Several CLI processes, each opening the database: slow when the machine is busy.
const TIMEOUT = 180_000

describe.each(DIALECTS)('matview sql (CLI) on %s', (dialect) => {
  let database: TestDatabase | undefined
  afterEach(async () => {
    await database?.close()
    database = undefined
  })

  it(
    'prints a script that, applied by another client, create accepts; exit 2 for a bad name',
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
      let url: string
      let apply: (script: string) => Promise<void>
      if (dialect === 'pglite') {
        const path = join(dir, 'db')
        url = `pglite:${path}`
        const opened = await connect(url)
        await createDemoSchema(opened.db, { customers: 20, orders: 200 })
        await opened.close()
        apply = async (script) => {
          const pglite = await PGlite.create(path)
          await pglite.exec(script)
          await pglite.close()
        }
      } else {
        database = await freshDatabase('postgres')
        url = database.url!
        await createDemoSchema(database.db, { customers: 20, orders: 200 })
        apply = async (script) => {
          const client = new pg.Client({ connectionString: url })
          await client.connect()
          await client.query(script)
          await client.end()
        }
      }
      writeCustomerTotalsConfig(dir, url, QUERY)

      const printed = await runCli(['sql'], dir)
      expect(printed.stderr).toBe('')
      expect(printed.code).toBe(0)
      expect(printed.stdout).toMatch(
        /^-- matview sql: the DDL "matview create" runs for customer_totals\n/,
      )
      expect(printed.stdout).toContain('CREATE TABLE "matview".views (')
      expect(printed.stdout).toContain('CREATE TABLE "matview"."log_1" AS SELECT "customer_id"')

      await apply(`BEGIN;\n${printed.stdout}COMMIT;\n`)
      const created = await runCli(['create'], dir)
      expect(created.code, created.stdout + created.stderr).toBe(0)
      expect(created.stdout).toMatch(
        /^customer_totals: done \(objects from "matview sql" checked, backfilled\), \+16 /m,
      )
      expect((await runCli(['verify'], dir)).code).toBe(0)
      expect((await runCli(['sql'], dir)).stdout).toMatch(/nothing to print/)

      const unknown = await runCli(['sql', 'nope'], dir)
      expect(unknown.code).toBe(2)
      expect(unknown.stderr.trim()).toBe(
        'matview: unknown view "nope"; known views: customer_totals',
      )
    },
    TIMEOUT,
  )
})
