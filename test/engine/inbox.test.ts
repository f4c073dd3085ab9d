import { type Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { Matview } from '../../src/index.js'
import { DIALECTS, freshDatabase, type TestDatabase } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'
import { customerTotals, expectCustomerTotalsInSync } from '../support/views.js'

async function viewId(db: Kysely<any>): Promise<number> {
  const { rows } = await sql<{ id: number }>`
    SELECT id FROM matview.views WHERE name = 'customer_totals'`.execute(db)
  return Number(rows[0]!.id)
}

async function rowCount(db: Kysely<any>, table: string): Promise<number> {
  const { rows } = await sql<{
    n: string
  }>`SELECT count(*) AS n FROM ${sql.id('matview', table)}`.execute(db)
  return Number(rows[0]!.n)
}

describe.each(DIALECTS)('the capture inbox on %s', (dialect) => {
  let mv: Matview | undefined
  const database = useTestDatabase(dialect, {
    setup: async (database) => {
      await createDemoSchema(database.db, { customers: 50, orders: 400 })
      mv = await Matview.open({ database, batchSize: 10, views: [customerTotals] })
      expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    },
    teardown: async () => {
      await mv?.close()
    },
  })

  const same = () => expectCustomerTotalsInSync(database.db)

  it('writers append one inbox row per statement, not to the log; the next update moves every key once and applies it', async () => {
    const id = await viewId(database.db)
    // Two statements touching the same 20 customers (2 rows each, old and new image): 2 inbox
    // rows holding 80 keys, 20 of them distinct.
    for (let i = 0; i < 2; i++)
      await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id <= 20`.execute(
        database.db,
      )
    // A statement that changes no row logs nothing.
    await sql`DELETE FROM orders WHERE customer_id < 0`.execute(database.db)
    expect(await rowCount(database.db, `inbox_${id}`)).toBe(2)
    const { rows: captured } = await sql<{ keys: string; distinct: string }>`
      SELECT count(*) AS keys, count(DISTINCT k) AS distinct
      FROM ${sql.id('matview', `inbox_${id}`)} CROSS JOIN LATERAL unnest(customer_id) AS k`.execute(
      database.db,
    )
    expect(Number(captured[0]!.distinct)).toBe(20)
    expect(Number(captured[0]!.keys)).toBeGreaterThanOrEqual(40)
    expect(await rowCount(database.db, `log_${id}`)).toBe(0)
    const [waiting] = await mv!.status()
    expect(waiting!.pending).toMatchObject({ total: 20, detail: { keys: 20 } })
    expect(waiting!.pending!.lagSeconds).not.toBeNull()

    // 20 keys in batches of 10: each key claimed once, whatever its inbox rows.
    const run = (await mv!.update()).views[0]!
    expect(run).toMatchObject({ outcome: 'done', batches: 2 })
    expect(run.updated).toBeGreaterThan(0)
    expect(await rowCount(database.db, `inbox_${id}`)).toBe(0)
    expect(await rowCount(database.db, `log_${id}`)).toBe(0)
    await same()
    expect((await mv!.status())[0]!.pending!.total).toBe(0)
  })

  it('a view made before the inbox (its capture writes the log) keeps working, and a rebuild gives it an inbox', async () => {
    const id = await viewId(database.db)
    // What matview made before 0.3: capture functions inserting each key into the log.
    await sql`DROP TABLE ${sql.id('matview', `inbox_${id}`)}`.execute(database.db)
    const { rows: functions } = await sql<{ name: string; body: string }>`
      SELECT p.proname AS name, p.prosrc AS body FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = 'matview' AND p.proname LIKE 'capture\\_%'`.execute(database.db)
    expect(functions).toHaveLength(2)
    for (const fn of functions) {
      const column = /SELECT ("[a-z_]+") FROM new_rows/.exec(fn.body)![1]!
      const into = `INSERT INTO "matview"."log_${id}" ("customer_id") SELECT ${column}`
      const old = `
BEGIN
  IF TG_OP = 'INSERT' THEN
    ${into} FROM new_rows WHERE ${column} IS NOT NULL;
  ELSIF TG_OP = 'UPDATE' THEN
    ${into} FROM (SELECT ${column} FROM new_rows UNION ALL SELECT ${column} FROM old_rows) AS changed
    WHERE ${column} IS NOT NULL;
  ELSE
    ${into} FROM old_rows WHERE ${column} IS NOT NULL;
  END IF;
  RETURN NULL;
END`
      await sql`
        CREATE OR REPLACE FUNCTION ${sql.id('matview', fn.name)}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(old)}`.execute(database.db)
    }
    await sql`UPDATE orders SET amount_cents = amount_cents + 3 WHERE customer_id <= 5`.execute(
      database.db,
    )
    expect(await rowCount(database.db, `log_${id}`)).toBeGreaterThanOrEqual(5)
    expect((await mv!.status())[0]!.pending).toMatchObject({ total: 5 })
    const run = (await mv!.update()).views[0]!
    expect(run).toMatchObject({ outcome: 'done' })
    expect(run.updated).toBeGreaterThan(0)
    await same()
    expect(await rowCount(database.db, `log_${id}`)).toBe(0)

    const rebuilt = (await mv!.rebuild(['customer_totals'])).views[0]!
    expect(rebuilt).toMatchObject({ outcome: 'done' })
    const newId = await viewId(database.db)
    await sql`DELETE FROM orders WHERE customer_id = 7`.execute(database.db)
    expect(await rowCount(database.db, `inbox_${newId}`)).toBe(1)
    expect((await mv!.update()).views[0]).toMatchObject({ outcome: 'done' })
    await same()
  })
})

describe('the capture inbox on PostgreSQL, with a second session', () => {
  let database: TestDatabase | undefined
  let mv: Matview | undefined
  afterEach(async () => {
    await mv?.close()
    await database?.close()
  })

  it('a run that finds another runner moving the inbox waits for it, then applies what it moved', async ({
    skip,
  }) => {
    if (!DIALECTS.includes('postgres')) skip()
    database = await freshDatabase('postgres')
    await createDemoSchema(database.db, { customers: 50, orders: 400 })
    mv = await Matview.open({ database, views: [customerTotals] })
    await mv.update()
    const id = await viewId(database.db)
    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id <= 4`.execute(
      database.db,
    )
    // Another runner (a partitioned view's second applier) moving the inbox, not yet committed.
    const other = new pg.Client({ connectionString: database.url })
    await other.connect()
    try {
      await other.query('BEGIN')
      await other.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [
        `matview:inbox:${id}`,
      ])
      await other.query(`
        WITH moved AS (DELETE FROM matview.inbox_${id} RETURNING customer_id)
        INSERT INTO matview.log_${id} (customer_id) SELECT DISTINCT unnest(customer_id) FROM moved`)
      const started = Date.now()
      const running = mv.update()
      await new Promise((resolve) => setTimeout(resolve, 300))
      await other.query('COMMIT')
      const run = (await running).views[0]!
      // It waited for the other's move, and its claim found the keys that one moved.
      expect(Date.now() - started).toBeGreaterThanOrEqual(300)
      expect(run).toMatchObject({ outcome: 'done' })
      expect(run.updated).toBeGreaterThan(0)
    } finally {
      await other.end()
    }
    expect(await rowCount(database.db, `inbox_${id}`)).toBe(0)
    expect(await rowCount(database.db, `log_${id}`)).toBe(0)
    await expectCustomerTotalsInSync(database.db)
  })
})
