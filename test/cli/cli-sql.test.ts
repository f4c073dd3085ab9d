import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { runCli, writeCustomerTotalsConfig } from '../support/cli.js'
import { useCliDatabase } from '../support/cli-database.js'
import { DIALECTS } from '../support/dialects.js'

// `matview sql` as a team with its own migration tool uses it: print, apply the script with
// another client, then `matview create`.

// Several CLI processes, each opening the database: slow when the machine is busy.
const TIMEOUT = 180_000

describe.each(DIALECTS)('matview sql (CLI) on %s', (dialect) => {
  const database = useCliDatabase(dialect)

  it(
    'prints a script that, applied by another client, create accepts; exit 2 for a bad name',
    async () => {
      const dir = database.dir
      await database.use((db) => createDemoSchema(db, { customers: 20, orders: 200 }))
      const apply = (script: string) => database.exec(script)
      writeCustomerTotalsConfig(dir, database.spec)

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
