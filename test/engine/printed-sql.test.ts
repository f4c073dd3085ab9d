import { PGlite } from '@electric-sql/pglite'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { connect, type Database } from '../../src/dialects/connect.js'
import { defineView, Matview, sql, viewSql } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS, freshDatabase, type TestDatabase } from '../support/dialects.js'

const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: customerTotalsQuery,
  sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
  indexes: [['region']],
})
// A view on the first one, mapped by a query: its source does not exist until the script runs.
const regionTotals = defineView({
  name: 'region_totals',
  key: ['region'],
  query: sql`SELECT region, sum(total_cents) AS total_cents FROM customer_totals GROUP BY region`,
  sources: { customer_totals: sql`SELECT region FROM changed` },
})
const VIEWS = [customerTotals, regionTotals]

describe.each(DIALECTS)('matview sql on %s', (dialect) => {
  let database: Database
  let cleanup: () => Promise<void>
  /** Runs a script of several statements, as psql or a migration tool does. */
  let runScript: (script: string) => Promise<void>

  const setUp = async () => {
    if (dialect === 'pglite') {
      const pglite = await PGlite.create()
      database = await connect(pglite)
      runScript = async (script) => {
        await pglite.exec(script)
      }
      cleanup = () => pglite.close()
    } else {
      const fresh: TestDatabase = await freshDatabase('postgres')
      database = fresh
      runScript = async (script) => {
        const client = new pg.Client({ connectionString: fresh.url! })
        await client.connect()
        try {
          await client.query(script)
        } finally {
          await client.end()
        }
      }
      cleanup = () => fresh.close()
    }
    await createDemoSchema(database.db, { customers: 30, orders: 300 })
  }
  afterEach(async () => {
    await cleanup?.()
  })

  const schemaObjects = async () => {
    const { rows } = await sql<{ n: number }>`
      SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'matview')::int
           + (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal)::int
           + (SELECT count(*) FROM pg_class WHERE relname IN ('customer_totals', 'region_totals'))::int AS n`.execute(
      database.db,
    )
    return rows[0]!.n
  }
  const printAndApply = async () => {
    const script = await viewSql({ database, views: VIEWS })
    await runScript(`BEGIN;\n${script}\nCOMMIT;`)
    return script
  }

  it('prints the DDL without changing anything; applied by hand, create accepts it', async () => {
    await setUp()
    const script = await viewSql({ database, views: VIEWS })
    expect(await schemaObjects()).toBe(0)
    expect(script).toMatch(
      /^-- matview sql: the DDL "matview create" runs for customer_totals, region_totals\n/,
    )
    expect(script).toContain('CREATE SCHEMA IF NOT EXISTS "matview";')
    expect(script).toContain('-- View customer_totals ---')
    expect(script).toContain(
      "-- The target, empty, with the query's columns and types (customer_id bigint, region text, order_count bigint, total_cents numeric)",
    )
    expect(script).toContain('$sql$CREATE INDEX ON "public"."customer_totals" ("region")$sql$')
    // Object names carry a placeholder the script replaces with the applying database's next id.
    expect(script).toContain(
      'CREATE TRIGGER "matview_1999999999_1_update" AFTER UPDATE ON "public"."orders"',
    )
    expect(script).toContain(
      "view_id := nextval(pg_get_serial_sequence('\"matview\".views', 'id'));",
    )
    expect(script).toContain('-- View region_totals ---')
    expect(script).toMatch(/-- Next: "matview create" checks these objects .*\n$/)

    await runScript(`BEGIN;\n${script}\nCOMMIT;`)
    expect(await viewSql({ database, views: VIEWS })).toMatch(/already created .*nothing to print/)
    // Writes between the script and create are captured like any other.
    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id = 3`.execute(
      database.db,
    )
    const mv = await Matview.open({ database, views: VIEWS })
    const { views } = await mv.update({ createOnly: true })
    expect(views.map((v) => [v.view, v.outcome, v.notes])).toEqual([
      ['customer_totals', 'done', ['objects from "matview sql" checked', 'backfilled']],
      ['region_totals', 'done', ['objects from "matview sql" checked', 'backfilled']],
    ])
    await sql`UPDATE orders SET status = 'paid' WHERE id % 7 = 0`.execute(database.db)
    await mv.update()
    const cols = ['customer_id', 'region', 'order_count', 'total_cents']
    expect(
      await queryDifferences(database.db, 'customer_totals', customerTotalsQuery, cols),
    ).toEqual({
      extra: [],
      missing: [],
    })
    expect((await mv.verify()).views.map((v) => v.outcome)).toEqual(['equal', 'equal'])
    await mv.close()
  })

  it.each([
    [
      'a missing index',
      sql`DROP INDEX customer_totals_region_idx`,
      'table "public.customer_totals" has no index on (region), which the definition declares',
    ],
    [
      'a changed column type',
      sql`ALTER TABLE customer_totals ALTER COLUMN order_count TYPE integer`,
      'table "public.customer_totals": column "order_count" is integer, matview makes it bigint',
    ],
    [
      'a changed capture function',
      sql`CREATE OR REPLACE FUNCTION matview.capture_1_1() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'BEGIN RETURN NULL; END'`,
      'function "matview.capture_1_1" has another body than matview\'s',
    ],
    [
      'a missing trigger',
      sql`DROP TRIGGER matview_1_0_delete ON customers`,
      'trigger "matview_1_0_delete" on "public.customers" does not exist',
    ],
  ])('refuses %s, naming it, and changes nothing', async (_what, alter, message) => {
    await setUp()
    await printAndApply()
    await alter.execute(database.db)
    const mv = await Matview.open({ database, views: [customerTotals] })
    const [result] = (await mv.update({ createOnly: true })).views
    expect(result!.outcome).toBe('failed')
    expect(result!.error).toBe(
      `view "customer_totals": ${message}; the objects from "matview sql" must be applied as printed (fix it, or drop the view with "matview drop customer_totals" and apply a fresh "matview sql")`,
    )
    const [status] = await mv.status()
    expect(status).toMatchObject({
      state: 'building',
      stateReason: expect.stringMatching(/matview sql/),
    })
    const { rows } = await sql`SELECT count(*)::int AS n FROM customer_totals`.execute(database.db)
    expect(rows).toEqual([{ n: 0 }])
    await mv.close()
  })

  it('prints a partitioned change log; create accepts it as printed, and refuses a partition detached', async () => {
    await setUp()
    const split = defineView({ ...customerTotals, partitions: 3 })
    const script = await viewSql({ database, views: [split] })
    expect(script).toContain('PARTITION BY HASH ("customer_id")')
    expect(script).toContain(
      '$sql$CREATE TABLE "matview"."log_1999999999_p2" PARTITION OF "matview"."log_1999999999" FOR VALUES WITH (MODULUS 3, REMAINDER 2)$sql$',
    )
    await runScript(`BEGIN;\n${script}\nCOMMIT;`)
    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id = 3`.execute(
      database.db,
    )
    let mv = await Matview.open({ database, views: [split] })
    expect((await mv.update({ createOnly: true })).views[0]!.notes).toEqual([
      'objects from "matview sql" checked',
      'backfilled',
    ])
    expect((await mv.update()).views[0]!.outcome).toBe('done')
    const cols = ['customer_id', 'region', 'order_count', 'total_cents']
    expect(
      await queryDifferences(database.db, 'customer_totals', customerTotalsQuery, cols),
    ).toEqual({ extra: [], missing: [] })
    await mv.drop(['customer_totals'])
    await mv.close()

    await runScript(`BEGIN;\n${await viewSql({ database, views: [split] })}\nCOMMIT;`)
    const { rows } = await sql<{ id: number }>`SELECT id FROM matview.views`.execute(database.db)
    const id = Number(rows[0]!.id)
    await sql`ALTER TABLE ${sql.id('matview', `log_${id}`)} DETACH PARTITION ${sql.id('matview', `log_${id}_p1`)}`.execute(
      database.db,
    )
    mv = await Matview.open({ database, views: [split] })
    const [result] = (await mv.update({ createOnly: true })).views
    expect(result!.error).toContain(
      `its change log "matview.log_${id}" does not have the 3 hash partitions matview makes`,
    )
    await mv.close()
  })
  it('prints any name inertly: a line break, a carriage return, quotes, */ or -- in a name runs as nothing', async () => {
    await setUp()
    const db = database.db
    await sql`CREATE TABLE victims (x int)`.execute(db)
    // Names reach the script's comments three ways: the view's name, a source's name, and the
    // columns of the target (here picked up by SELECT s.*).
    const source = "src\rDROP TABLE victims; -- */ '"
    const note = 'note\nDROP TABLE victims; --'
    const quoted = 'q\'"*/\r\nDROP TABLE victims;\u2028DROP TABLE victims;'
    await sql`CREATE TABLE ${sql.id(source)} (id int PRIMARY KEY, ${sql.id(note)} text, ${sql.id(quoted)} int)`.execute(
      db,
    )
    await sql`INSERT INTO ${sql.id(source)} VALUES (1, 'a', 2), (2, 'b', 3)`.execute(db)
    const view = defineView({
      name: 'copy\nDROP TABLE victims; --',
      key: ['id'],
      query: sql`SELECT s.* FROM ${sql.id(source)} AS s`,
      sources: { [source]: { id: 'id' } },
    })
    const script = await viewSql({ database, views: [view] })
    expect(script).toContain('-- View copy\\nDROP TABLE victims; --')
    await runScript(`BEGIN;\n${script}\nCOMMIT;`)
    const { rows } = await sql<{ there: boolean }>`
      SELECT to_regclass('victims') IS NOT NULL AS there`.execute(db)
    expect(rows).toEqual([{ there: true }])
    // And what it made is what create makes.
    const mv = await Matview.open({ database, views: [view] })
    expect((await mv.update({ createOnly: true })).views[0]!.notes).toEqual([
      'objects from "matview sql" checked',
      'backfilled',
    ])
    await sql`UPDATE ${sql.id(source)} SET ${sql.id(quoted)} = 9 WHERE id = 2`.execute(db)
    expect((await mv.update()).views[0]!.outcome).toBe('done')
    const copied = await sql<Record<string, unknown>>`
      SELECT * FROM ${sql.id(view.name)} ORDER BY id`.execute(db)
    expect(copied.rows).toEqual([
      { id: 1, [note]: 'a', [quoted]: 2 },
      { id: 2, [note]: 'b', [quoted]: 9 },
    ])
    await mv.close()
  })
})
