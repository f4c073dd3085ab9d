import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { defineView, Matview } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS, type TestDatabase } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// Sources that are partitioned, have inheritance children, or are themselves a partition.
// PostgreSQL fires a statement trigger only on the table a statement names: these tests write
// through every table of the tree. PGlite runs as a superuser, so it has the event triggers
// too; "without event triggers" drops them, as a role that may not create them has none.

const TOTALS = sql`SELECT customer_id, sum(amount)::bigint AS total FROM orders GROUP BY customer_id`
const totals = defineView({
  name: 'totals',
  key: ['customer_id'],
  query: TOTALS,
  sources: { orders: { customer_id: 'customer_id' } },
})
const ITEMS = sql`SELECT customer_id, sum(qty)::bigint AS qty FROM items GROUP BY customer_id`
const itemTotals = defineView({
  name: 'item_totals',
  key: ['customer_id'],
  query: ITEMS,
  sources: { items: { customer_id: 'customer_id' } },
})
// Keyed by region, which orders do not hold: a query mapping, whose capture stages whole rows.
const REGIONS = sql`
  SELECT c.region, sum(o.amount)::bigint AS total
  FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY c.region`
const regionTotals = defineView({
  name: 'region_totals',
  key: ['region'],
  query: REGIONS,
  sources: {
    orders: sql`SELECT c.region FROM changed ch JOIN customers c ON c.id = ch.customer_id`,
    customers: { region: 'region' },
  },
})
const Y2024 = sql`SELECT customer_id, sum(amount)::bigint AS total FROM orders_2024 GROUP BY customer_id`
const totals2024 = defineView({
  name: 'totals_2024',
  key: ['customer_id'],
  query: Y2024,
  sources: { orders_2024: { customer_id: 'customer_id' } },
})

const ARCHIVE = sql`SELECT customer_id, sum(qty)::bigint AS qty FROM items_archive GROUP BY customer_id`
const archiveTotals = defineView({
  name: 'archive_totals',
  key: ['customer_id'],
  query: ARCHIVE,
  sources: { items_archive: { customer_id: 'customer_id' } },
})

async function inSync(
  db: TestDatabase['db'],
  table: string,
  query: typeof TOTALS,
  columns: string[],
) {
  expect(await queryDifferences(db, table, query, columns)).toEqual({ extra: [], missing: [] })
}

async function state(db: TestDatabase['db'], view: string) {
  const { rows } = await sql<{ state: string; state_reason: string | null }>`
    SELECT state, state_reason FROM matview.views WHERE name = ${view}`.execute(db)
  return rows[0]
}

/** Runs fixed statements one by one (PGlite prepares each: one command a statement). */
async function run(db: TestDatabase['db'], ...statements: string[]) {
  for (const statement of statements) await sql.raw(statement).execute(db)
}

/** As for a role that may not create event triggers: only the check at each run is left. */
async function withoutEventTriggers(db: TestDatabase['db']) {
  await sql`DROP EVENT TRIGGER matview_watch_ddl`.execute(db)
  await sql`DROP EVENT TRIGGER matview_watch_drop`.execute(db)
}

describe.each(DIALECTS)('partitioned and inherited sources on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await run(
        db,
        `CREATE TABLE customers (id int PRIMARY KEY, region text NOT NULL)`,
        `INSERT INTO customers VALUES (1, 'north'), (2, 'south'), (3, 'north')`,
        `CREATE TABLE orders (id int, customer_id int NOT NULL, amount int NOT NULL, created date NOT NULL)
           PARTITION BY RANGE (created)`,
        `CREATE TABLE orders_2024 PARTITION OF orders FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`,
        `CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
           PARTITION BY RANGE (created)`,
        `CREATE TABLE orders_2025_h1 PARTITION OF orders_2025 FOR VALUES FROM ('2025-01-01') TO ('2025-07-01')`,
        `CREATE TABLE orders_2025_h2 PARTITION OF orders_2025 FOR VALUES FROM ('2025-07-01') TO ('2026-01-01')`,
        `INSERT INTO orders VALUES (1, 1, 10, '2024-05-01'), (2, 2, 20, '2025-05-01'), (3, 3, 30, '2025-09-01')`,
        `CREATE TABLE items (id int, customer_id int NOT NULL, qty int NOT NULL)`,
        `CREATE TABLE items_archive (archived date) INHERITS (items)`,
        `INSERT INTO items VALUES (1, 1, 1)`,
        `INSERT INTO items_archive VALUES (2, 2, 5, '2024-01-01')`,
      )
    },
  })

  it('captures writes and TRUNCATE that name a partition, a sub-partition or an inheritance child', async () => {
    const mv = await Matview.open({ database, views: [totals, itemTotals, regionTotals] })
    await mv.update()
    const db = database.db
    await sql`INSERT INTO orders_2024 VALUES (4, 1, 100, '2024-06-01')`.execute(db)
    await sql`UPDATE orders_2025_h1 SET amount = 999 WHERE id = 2`.execute(db)
    await sql`DELETE FROM orders_2025_h2 WHERE id = 3`.execute(db)
    await sql`INSERT INTO items_archive VALUES (3, 1, 50, NULL)`.execute(db)
    await sql`UPDATE items_archive SET customer_id = 3 WHERE id = 2`.execute(db)
    expect((await mv.update()).views.map((v) => v.outcome)).toEqual(['done', 'done', 'done'])
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    await inSync(db, 'item_totals', ITEMS, ['customer_id', 'qty'])
    await inSync(db, 'region_totals', REGIONS, ['region', 'total'])

    await sql`TRUNCATE orders_2025_h1`.execute(db)
    expect(await state(db, 'totals')).toEqual({
      state: 'needs_rebuild',
      state_reason:
        'public.orders_2025_h1, a partition or child of source public.orders, was truncated',
    })
    await mv.close()
  })

  it('captures a statement naming the parent once, with the rows of every partition and child', async () => {
    const mv = await Matview.open({ database, views: [totals, itemTotals] })
    await mv.update()
    const db = database.db
    const inbox = async (view: string) => {
      const { rows } = await sql<{ id: number }>`
        SELECT id FROM matview.views WHERE name = ${view}`.execute(db)
      const { rows: counts } = await sql<{ statements: number; keys: number }>`
        SELECT count(*)::int AS statements, coalesce(sum(cardinality(customer_id)), 0)::int AS keys
        FROM ${sql.id('matview', `inbox_${rows[0]!.id}`)}`.execute(db)
      return counts[0]
    }
    // Three rows, in three partitions: one statement, one inbox row, each row's key logged once
    // (old and new image: two keys a row).
    await sql`UPDATE orders SET amount = amount + 1`.execute(db)
    expect(await inbox('totals')).toEqual({ statements: 1, keys: 6 })
    // Inheritance: the parent's row and the child's, in the parent's transition tables.
    await sql`UPDATE items SET qty = qty + 1`.execute(db)
    expect(await inbox('item_totals')).toEqual({ statements: 1, keys: 4 })
    await mv.update()
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    await inSync(db, 'item_totals', ITEMS, ['customer_id', 'qty'])
    await mv.close()
  })

  it('captures a partition created later from its creation, and marks the view on ATTACH, DETACH and DROP', async () => {
    const mv = await Matview.open({ database, views: [totals, regionTotals] })
    await mv.update()
    const db = database.db
    // Created empty: captured from the start, nothing missed, the view stays ready.
    await sql`CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`.execute(
      db,
    )
    await sql`INSERT INTO orders_2026 VALUES (5, 2, 500, '2026-02-01')`.execute(db)
    await sql`CREATE TABLE items_2026 () INHERITS (items)`.execute(db)
    expect(await state(db, 'totals')).toEqual({ state: 'ready', state_reason: null })
    expect((await mv.update()).views.map((v) => v.outcome)).toEqual(['done', 'done'])
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    await inSync(db, 'region_totals', REGIONS, ['region', 'total'])

    // Attached with rows in it: the query's result changed without a write.
    await sql`CREATE TABLE orders_2027 (LIKE orders)`.execute(db)
    await sql`INSERT INTO orders_2027 VALUES (6, 3, 700, '2027-03-01')`.execute(db)
    await sql`ALTER TABLE orders ATTACH PARTITION orders_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')`.execute(
      db,
    )
    expect(await state(db, 'totals')).toEqual({
      state: 'needs_rebuild',
      state_reason:
        'public.orders_2027 became a partition or child of source public.orders and its rows were not captured',
    })
    const failed = (await mv.update()).views[0]!
    expect(failed.outcome).toBe('failed')
    expect(failed.error).toContain('run "matview rebuild totals"')
    await mv.rebuild(['totals', 'region_totals'])
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    // The attached partition is captured now.
    await sql`UPDATE orders_2027 SET amount = 1 WHERE id = 6`.execute(db)
    await mv.update()
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    await inSync(db, 'region_totals', REGIONS, ['region', 'total'])

    await sql`ALTER TABLE orders DETACH PARTITION orders_2024`.execute(db)
    expect((await state(db, 'totals'))!.state_reason).toBe(
      'public.orders_2024 was detached from source public.orders (it is no longer a partition or child)',
    )
    // It lost the capture: its writes are the application's own business now.
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'orders_2024'::regclass AND NOT tgisinternal`.execute(
      db,
    )
    expect(rows[0]!.n).toBe(0)
    await mv.rebuild(['totals', 'region_totals'])
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])

    await sql`DROP TABLE orders_2026`.execute(db)
    expect((await state(db, 'totals'))!.state_reason).toBe(
      'a partition or child of source public.orders was dropped',
    )
    await mv.rebuild(['totals', 'region_totals'])
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    await inSync(db, 'region_totals', REGIONS, ['region', 'total'])
    await mv.close()
  })

  it('without event triggers, the next run puts the capture on a new partition and marks the view; status says so first', async () => {
    const mv = await Matview.open({ database, views: [totals] })
    await mv.update()
    const db = database.db
    await withoutEventTriggers(db)
    await sql`CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`.execute(
      db,
    )
    // Missed: nothing watched the DDL, and this write names the new partition.
    await sql`INSERT INTO orders_2026 VALUES (5, 2, 500, '2026-02-01')`.execute(db)
    const reason =
      'public.orders_2026 became a partition or child of source public.orders and its rows were not captured'
    expect((await mv.status())[0]).toMatchObject({ state: 'needs_rebuild', stateReason: reason })
    const result = (await mv.update()).views[0]!
    expect(result.outcome).toBe('failed')
    expect(result.error).toBe(
      `view "totals": needs a rebuild (${reason}); run "matview rebuild totals"`,
    )
    await mv.rebuild(['totals'])
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    await sql`INSERT INTO orders_2026 VALUES (6, 1, 5, '2026-03-01')`.execute(db)
    await sql`ALTER TABLE orders DETACH PARTITION orders_2024`.execute(db)
    expect((await mv.update()).views[0]!.error).toContain('public.orders_2024 was detached')
    await mv.rebuild(['totals'])
    await inSync(db, 'totals', TOTALS, ['customer_id', 'total'])
    await mv.close()
  })

  it('keeps a view over one partition, or over an inheritance child, fresh when statements name the parent', async () => {
    const mv = await Matview.open({ database, views: [totals2024, archiveTotals] })
    await mv.update()
    const db = database.db
    await sql`INSERT INTO orders VALUES (7, 2, 70, '2024-08-01'), (8, 2, 80, '2025-08-01')`.execute(
      db,
    )
    // Moves a row out of the partition, through the parent.
    await sql`UPDATE orders SET created = '2025-02-01' WHERE id = 1`.execute(db)
    await sql`DELETE FROM orders WHERE id = 7`.execute(db)
    await sql`INSERT INTO orders VALUES (9, 3, 90, '2024-09-01')`.execute(db)
    // An inheritance child's rows change through its parent too.
    await sql`UPDATE items SET qty = qty * 10`.execute(db)
    await sql`DELETE FROM items WHERE id = 1`.execute(db)
    expect((await mv.update()).views.map((v) => v.outcome)).toEqual(['done', 'done'])
    await inSync(db, 'totals_2024', Y2024, ['customer_id', 'total'])
    await inSync(db, 'archive_totals', ARCHIVE, ['customer_id', 'qty'])
    // TRUNCATE of the parent empties the partition: its own TRUNCATE trigger fires.
    await sql`TRUNCATE orders`.execute(db)
    expect(await state(db, 'totals_2024')).toEqual({
      state: 'needs_rebuild',
      state_reason: 'source public.orders_2024 was truncated',
    })
    await mv.close()
  })

  it('refuses an inheritance child as a source when its parent lacks the columns the capture reads', async () => {
    await run(
      database.db,
      'CREATE TABLE events (id int)',
      'CREATE TABLE clicks (customer_id int NOT NULL) INHERITS (events)',
    )
    const clicks = defineView({
      name: 'clicks_per_customer',
      key: ['customer_id'],
      query: sql`SELECT customer_id, count(*) AS n FROM clicks GROUP BY customer_id`,
      sources: { clicks: { customer_id: 'customer_id' } },
    })
    const mv = await Matview.open({ database, views: [clicks] })
    const result = (await mv.update()).views[0]!
    expect(result.outcome).toBe('failed')
    expect(result.error).toBe(
      'view "clicks_per_customer": source "clicks" inherits from "public.events", which lacks its column "customer_id": writes naming "public.events" change its rows but could not be captured; make "public.events" the source (filter by tableoid in the query) or give it the columns',
    )
    const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM matview.views`.execute(
      database.db,
    )
    expect(rows[0]!.n).toBe(0)
    await mv.close()
  })
})
