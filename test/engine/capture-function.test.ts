import { type Kysely, sql } from 'kysely'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { CAPTURE_CHUNK_KEYS, captureFunctionBody } from '../../src/engine/capture-ddl.js'
import { viewObjects } from '../../src/engine/names.js'
import { defineView, Matview } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS, type TestDatabase } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'
import { customerTotals, expectCustomerTotalsInSync } from '../support/views.js'

// What the capture function does in the writer's session (src/engine/capture-ddl.ts): writes
// that skip ordinary triggers, settings of the writer's session, statements too large for one
// array, and capture functions of an earlier matview.

async function viewId(db: Kysely<any>, name: string): Promise<number> {
  const { rows } = await sql<{ id: number }>`
    SELECT id FROM matview.views WHERE name = ${name}`.execute(db)
  return Number(rows[0]!.id)
}

/**
 * Runs `statements` as the application would, in a session of its own with `settings` (SET
 * commands): a second connection on PostgreSQL; on PGlite, which has one session, a transaction
 * whose SET LOCAL ends with it, so matview's own statements never see the settings.
 */
async function asWriter(database: TestDatabase, settings: string, statements: string) {
  if (database.url) {
    const client = new pg.Client({ connectionString: database.url })
    await client.connect()
    try {
      await client.query(`${settings}; ${statements}`)
    } finally {
      await client.end()
    }
    return
  }
  await database.db.transaction().execute(async (trx) => {
    await sql.raw(settings.replaceAll(/\bSET\b/g, 'SET LOCAL')).execute(trx)
    for (const statement of statements.split(';').filter((s) => s.trim()))
      await sql.raw(statement).execute(trx)
  })
}

describe.each(DIALECTS)('the capture function on %s', (dialect) => {
  let mv: Matview | undefined
  const database = useTestDatabase(dialect, {
    setup: (database) => createDemoSchema(database.db, { customers: 40, orders: 300 }),
    teardown: async () => {
      await mv?.close()
      mv = undefined
    },
  })

  it('captures writes made with session_replication_role = replica (a subscriber, a data-only restore), and their TRUNCATE', async () => {
    // PGlite runs as a superuser, like PostgreSQL's test login: both may set the role.
    mv = await Matview.open({ database, views: [customerTotals] })
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    await asWriter(
      database,
      'SET session_replication_role = replica',
      `INSERT INTO orders (customer_id, amount_cents, status) VALUES (3, 500, 'paid');
       UPDATE orders SET customer_id = 4 WHERE customer_id = 5;
       DELETE FROM orders WHERE customer_id = 6;
       UPDATE customers SET region = 'moved' WHERE id = 7`,
    )
    expect((await mv.status())[0]!.pending!.total).toBeGreaterThan(0)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    await expectCustomerTotalsInSync(database.db)

    await asWriter(database, 'SET session_replication_role = replica', 'TRUNCATE orders')
    expect((await mv.status())[0]).toMatchObject({ state: 'needs_rebuild' })
  })

  it('logs float keys exactly, whatever extra_float_digits the writer (or the database) sets', async () => {
    const db = database.db
    await sql`CREATE TABLE readings (id int PRIMARY KEY, value float8 NOT NULL, n int NOT NULL)`.execute(
      db,
    )
    await sql`INSERT INTO readings VALUES (1, 0.1, 1)`.execute(db)
    if (database.url) {
      // matview's own connections start with this too: its keys travel as text.
      const name = new URL(database.url).pathname.slice(1)
      await sql`ALTER DATABASE ${sql.id(name)} SET extra_float_digits = 0`.execute(db)
    }
    const query = sql`SELECT value, sum(n)::bigint AS total FROM readings GROUP BY value`
    const view = defineView({
      name: 'reading_totals',
      key: ['value'],
      query,
      sources: { readings: { value: 'value' } },
    })
    // On PostgreSQL, connections opened after the ALTER DATABASE.
    mv = await Matview.open({ database: database.url ?? database, views: [view] })
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    // Values that 15 significant digits (extra_float_digits = 0) print as another float.
    await asWriter(
      database,
      'SET extra_float_digits = -15',
      `INSERT INTO readings VALUES (2, 0.1::float8 + 0.2::float8, 2), (3, 0.3, 4), (4, 1/3::float8, 8);
       UPDATE readings SET n = n + 16 WHERE id = 1`,
    )
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    expect(await queryDifferences(db, 'reading_totals', query, ['value', 'total'])).toEqual({
      extra: [],
      missing: [],
    })
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM reading_totals`.execute(db)
    expect(rows).toEqual([{ n: 4 }])
  })

  it('writes a statement with more keys than one row holds as several inbox rows, and applies them all', async () => {
    const db = database.db
    mv = await Matview.open({ database, views: [customerTotals] })
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    const id = await viewId(db, 'customer_totals')
    const inbox = sql.id('matview', `inbox_${id}`)
    /** The key counts of the inbox rows since the last call; the update then applies them. */
    const sizes = async () => {
      const { rows } = await sql<{ n: number }>`
        SELECT cardinality(customer_id) AS n FROM ${inbox} ORDER BY n DESC`.execute(db)
      expect((await mv!.update()).views[0]).toMatchObject({ outcome: 'done' })
      return rows.map((r) => Number(r.n))
    }

    // The default size: 25,000 keys in one statement are 10,000 + 10,000 + 5,000.
    await sql`
      INSERT INTO orders (customer_id, amount_cents, status)
      SELECT 1 + g % 40, g, 'paid' FROM generate_series(1, 25000) AS g`.execute(db)
    expect(CAPTURE_CHUNK_KEYS).toBe(10_000)
    expect(await sizes()).toEqual([10_000, 10_000, 5_000])

    // The same function body at 3 keys a row (the limit is a constant of the body).
    const objects = viewObjects('matview', id)
    const { rows: sources } = await sql<{ position: number; table: string }>`
      SELECT position, source_table AS table FROM matview.view_sources
      WHERE view = 'customer_totals'`.execute(db)
    const targets = sources.map((s) => ({
      fn: `capture_${id}_${s.position}`,
      sourceColumns: [s.table === 'orders' ? 'customer_id' : 'id'],
    }))
    for (const { fn, sourceColumns } of targets) {
      const body = captureFunctionBody(
        db,
        { kind: 'columns', log: objects.inbox, keyColumns: ['customer_id'], sourceColumns },
        'matview',
        id,
        3,
      )
      await sql`
        CREATE OR REPLACE FUNCTION ${sql.id('matview', fn)}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(body)}`.execute(db)
    }
    const { rows: counted } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM orders WHERE customer_id <= 2`.execute(db)
    const changed = counted[0]!.n
    // An UPDATE logs both images: 2 × changed keys, in rows of at most 3.
    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id <= 2`.execute(db)
    const update = await sizes()
    expect(update.reduce((a, b) => a + b, 0)).toBe(2 * changed)
    expect(update.length).toBe(Math.ceil((2 * changed) / 3))
    expect(Math.max(...update)).toBe(3)
    // Exactly one row's worth: the first row is full, the rest is empty, no second row.
    await sql`UPDATE customers SET region = 'x' WHERE id IN (1, 2, 3)`.execute(db)
    expect((await sizes()).reduce((a, b) => a + b, 0)).toBe(6)
    await sql`DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE customer_id = 5 LIMIT 3)`.execute(
      db,
    )
    expect(await sizes()).toEqual([3])
    await sql`
      INSERT INTO orders (customer_id, amount_cents, status)
      SELECT 1 + g % 7, g, 'paid' FROM generate_series(1, 7) AS g`.execute(db)
    expect(await sizes()).toEqual([3, 3, 1])

    // Keys in every row are applied: the view equals its query.
    await sql`
      UPDATE orders SET amount_cents = amount_cents + 7 WHERE customer_id BETWEEN 10 AND 20`.execute(
      db,
    )
    await sql`DELETE FROM orders WHERE customer_id = 30`.execute(db)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    await expectCustomerTotalsInSync(db)
  })
  it('makes the query-mapped capture of an earlier matview (SECURITY DEFINER) run as the writer when the catalog migrates', async () => {
    const db = database.db
    const query = sql`
      SELECT c.region, count(*) AS order_count FROM orders o
      JOIN customers c ON c.id = o.customer_id GROUP BY c.region`
    const regions = defineView({
      name: 'region_orders',
      key: ['region'],
      query,
      sources: {
        orders: sql`SELECT c.region FROM changed ch JOIN customers c ON c.id = ch.customer_id`,
        customers: { region: 'region' },
      },
    })
    mv = await Matview.open({ database, views: [regions] })
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    const capture = async () => {
      const { rows } = await sql<{ name: string; definer: boolean; stage: string }>`
        SELECT p.proname AS name, p.prosecdef AS definer,
               substring(p.prosrc from '"matview"\."(stage_[0-9_]+)"') AS stage
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'matview' AND p.prosrc LIKE '%pg_catalog.to_jsonb(r)%'`.execute(db)
      expect(rows).toHaveLength(1)
      return rows[0]!
    }
    const grantedToAll = async (stage: string) => {
      const { rows } = await sql<{ granted: boolean }>`
        SELECT has_table_privilege('public', ${`matview.${stage}`}, 'INSERT') AS granted`.execute(
        db,
      )
      return rows[0]!.granted
    }
    const now = await capture()
    expect(now.definer).toBe(false)
    expect(await grantedToAll(now.stage)).toBe(true)
    // What matview made before: the capture ran as matview, the stage was matview's alone.
    await sql`ALTER FUNCTION ${sql.id('matview', now.name)}() SECURITY DEFINER`.execute(db)
    await sql`REVOKE INSERT ON ${sql.id('matview', now.stage)} FROM PUBLIC`.execute(db)
    await sql`DELETE FROM matview.catalog_version WHERE version = 8`.execute(db)
    await mv.close()

    // The next matview command migrates the catalog.
    mv = await Matview.open({ database, views: [regions] })
    await sql`UPDATE customers SET region = 'moved' WHERE id = 4`.execute(db)
    await sql`UPDATE orders SET customer_id = 1 WHERE customer_id IN (2, 3)`.execute(db)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    expect((await capture()).definer).toBe(false)
    expect(await grantedToAll(now.stage)).toBe(true)
    expect(await queryDifferences(db, 'region_orders', query, ['region', 'order_count'])).toEqual({
      extra: [],
      missing: [],
    })
  })
})
