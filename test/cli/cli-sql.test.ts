import { spawnSync } from 'node:child_process'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { createCatalogSchema, migrationRecord } from '../../src/catalog/ensure-catalog.js'
import { MIGRATIONS } from '../../src/catalog/migrations.js'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { runCli, writeConfig, writeCustomerTotalsConfig } from '../support/cli.js'
import { type CliDatabase, cliDatabase, useCliDatabase } from '../support/cli-database.js'
import { available, DIALECTS } from '../support/dialects.js'

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
      // No id of this database: the objects are named by a placeholder the script replaces.
      expect(printed.stdout).toContain(
        'CREATE TABLE "matview"."log_1999999999" AS SELECT "customer_id"',
      )
      expect(printed.stdout).not.toMatch(/log_1"/)

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

const psqlInstalled = spawnSync('psql', ['--version']).status === 0

/** A view of another name on orders, created first so the catalog has taken id 1. */
const ORDER_COUNTS = `defineView({
      name: 'order_counts',
      key: ['customer_id'],
      query: sql\`SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id\`,
      sources: { orders: { customer_id: 'customer_id' } },
    })`

describe.each(DIALECTS)('matview sql applies to any database, on %s', (dialect) => {
  const opened: CliDatabase[] = []
  afterEach(async () => {
    for (const database of opened.splice(0)) await database.close()
  })

  async function withDemo(): Promise<CliDatabase> {
    const database = await cliDatabase(dialect)
    opened.push(database)
    await database.use((db) => createDemoSchema(db, { customers: 20, orders: 200 }))
    writeCustomerTotalsConfig(database.dir, database.spec)
    return database
  }

  /** psql -1 on PostgreSQL, as a migration tool applies a file; PGlite runs it as one script. */
  function apply(database: CliDatabase, script: string): Promise<void> {
    if (dialect === 'pglite') return database.exec(script)
    const psql = spawnSync(
      'psql',
      ['-1', '-q', '-v', 'ON_ERROR_STOP=1', '-d', database.spec, '-f', '-'],
      {
        input: script,
        encoding: 'utf8',
      },
    )
    if (psql.status !== 0) throw new Error(`psql failed: ${psql.stderr}`)
    return Promise.resolve()
  }

  const viewId = (database: CliDatabase) =>
    database.use(async (db) =>
      Number(
        (
          await sql<{
            id: number
          }>`SELECT id FROM matview.views WHERE name = 'customer_totals'`.execute(db)
        ).rows[0]!.id,
      ),
    )

  it('printed from one database, applies to a fresh one, to one with a catalog and a view, and to an older catalog; update works on each', async ({
    skip,
  }) => {
    if (!(await available(dialect))) skip()
    if (dialect === 'postgres' && !psqlInstalled) skip() // psql is the client this test applies with
    const source = await withDemo()
    const printed = await runCli(['sql'], source.dir)
    expect(printed.code, printed.stderr).toBe(0)
    const script = printed.stdout

    // A fresh database: the catalog and the view are created by the script.
    const fresh = await withDemo()
    // A catalog with a view of its own at id 1: the printed view takes the next id there.
    const withCatalog = await withDemo()
    writeConfig(withCatalog.dir, {
      database: withCatalog.spec,
      batchSize: 25,
      views: [ORDER_COUNTS],
    })
    expect((await runCli(['create'], withCatalog.dir)).code).toBe(0)
    writeCustomerTotalsConfig(withCatalog.dir, withCatalog.spec)
    // A catalog two migrations old: the script runs the ones it lacks.
    const older = await withDemo()
    await older.use(async (db) => {
      await createCatalogSchema(db, 'matview')
      for (const migration of MIGRATIONS.slice(0, 2)) {
        await migration.up(db, 'matview')
        await migrationRecord('matview', migration).execute(db)
      }
    })

    for (const target of [fresh, withCatalog, older]) {
      await apply(target, script)
      const update = await runCli(['update'], target.dir)
      expect(update.code, update.stdout + update.stderr).toBe(0)
      expect(update.stdout).toMatch(
        /customer_totals: done \(objects from "matview sql" checked, backfilled\)/,
      )
      // Applied again, the script changes nothing and fails nothing; the capture works under
      // the id this database gave: a write, an update, then the view equals its query.
      await apply(target, script)
      await target.use((db) =>
        sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE id <= 50`.execute(db),
      )
      expect((await runCli(['update'], target.dir)).code).toBe(0)
      const verify = await runCli(['verify'], target.dir)
      expect(verify.code, verify.stdout).toBe(0)
    }
    expect(await viewId(fresh)).toBe(1)
    expect(await viewId(withCatalog)).toBe(2)
    expect(await viewId(older)).toBe(1)
    // The database it was printed from is left as it was: no catalog.
    const catalog = await source.use(
      async (db) =>
        (await sql`SELECT 1 FROM pg_namespace WHERE nspname = 'matview'`.execute(db)).rows.length,
    )
    expect(catalog).toBe(0)
  }, 600_000)
})
