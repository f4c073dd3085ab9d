import type { RawBuilder } from 'kysely'
import { describe, expect, it } from 'vitest'
import { type DeclarativeView, defineView, Matview, sql } from '../../src/index.js'
import type { UpdateOptions, ViewResult } from '../../src/runner/update.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

/**
 * One test per view shape: create, backfill, check the target equals the query; write every
 * kind of change (insert, update, a row moving to another key or across the WHERE filter,
 * delete, delete of parent rows), update, check again, and check the counts a user reads in
 * the update's result. The data is small and fixed so the counts can be worked out by hand
 * (the comments do it); once the writes are committed, a drain recomputes each key to its
 * final value the first time it sees it, so the counts do not depend on the batch size.
 */

interface Order {
  id: number
  customer_id: number
  amount_cents: number
  status: string
}

const CUSTOMERS: [id: number, name: string, region: string | null][] = [
  [1, 'Ada', 'north'],
  [2, 'Bob', 'south'],
  [3, 'Cy', 'north'],
  [4, 'Di', null],
  [5, 'Ed', 'east'],
  [6, 'Flo', 'west'], // no orders
]

const ORDERS: Order[] = [
  { id: 1, customer_id: 1, amount_cents: 100, status: 'paid' },
  { id: 2, customer_id: 1, amount_cents: 250, status: 'paid' },
  { id: 3, customer_id: 1, amount_cents: 700, status: 'pending' },
  { id: 4, customer_id: 2, amount_cents: 300, status: 'paid' },
  { id: 5, customer_id: 2, amount_cents: 900, status: 'pending' },
  { id: 6, customer_id: 3, amount_cents: 50, status: 'paid' },
  { id: 7, customer_id: 4, amount_cents: 400, status: 'paid' },
  { id: 8, customer_id: 4, amount_cents: 600, status: 'refunded' },
  { id: 9, customer_id: 5, amount_cents: 120, status: 'pending' },
  // Customer 7 does not exist (yet): an inner join drops this order.
  { id: 10, customer_id: 7, amount_cents: 80, status: 'paid' },
]

const customerTotalsQuery = sql`
  SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.status = 'paid'
  GROUP BY o.customer_id, c.region`

const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: customerTotalsQuery,
  sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
})

describe.each(DIALECTS)('view shapes on %s', (dialect) => {
  let mv: Matview | undefined
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await sql`CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, region text)`.execute(
        db,
      )
      await sql`
        CREATE TABLE orders (
          id bigint PRIMARY KEY,
          customer_id bigint NOT NULL,
          amount_cents bigint NOT NULL,
          status text NOT NULL
        )`.execute(db)
      for (const [id, name, region] of CUSTOMERS) await addCustomer(id, name, region)
      for (const order of ORDERS) await addOrder(order)
    },
    teardown: async () => {
      await mv?.close()
      mv = undefined
    },
  })

  const run = (q: RawBuilder<unknown>) => q.execute(database.db)
  const addCustomer = (id: number, name: string, region: string | null) =>
    run(sql`INSERT INTO customers (id, name, region) VALUES (${id}, ${name}, ${region})`)
  const addOrder = (o: Order) =>
    run(sql`
      INSERT INTO orders (id, customer_id, amount_cents, status)
      VALUES (${o.id}, ${o.customer_id}, ${o.amount_cents}, ${o.status})`)

  const open = async (views: DeclarativeView[], batchSize = 50) => {
    mv = await Matview.open({ database, batchSize, views })
    return mv
  }

  /** Runs one update and returns each view's result by name. */
  const update = async (options: UpdateOptions = {}) => {
    const summary = await mv!.update(options)
    return Object.fromEntries(summary.views.map((v) => [v.view, v])) as Record<string, ViewResult>
  }

  const queryRows = async (query: RawBuilder<unknown>) =>
    Number(
      (await sql<{ n: string }>`SELECT count(*) AS n FROM (${query}) AS q`.execute(database.db))
        .rows[0]!.n,
    )

  /** The first invariant: target EXCEPT query and query EXCEPT target are both empty. */
  const expectSame = async (view: DeclarativeView, columns: string[]) => {
    expect(await queryDifferences(database.db, view.name, view.query, columns)).toEqual({
      extra: [],
      missing: [],
    })
    // Equal and non-empty, so the comparison above compared something.
    expect(await queryRows(view.query)).toBeGreaterThan(0)
  }

  /** A first update creates and backfills: every row of the query is inserted, nothing else. */
  const expectBackfilled = async (result: ViewResult | undefined, view: DeclarativeView) => {
    expect(result).toMatchObject({
      view: view.name,
      outcome: 'done',
      inserted: await queryRows(view.query),
      updated: 0,
      deleted: 0,
    })
  }

  const expectCounts = (
    result: ViewResult | undefined,
    counts: { inserted: number; updated: number; deleted: number },
  ) => expect(result).toMatchObject({ outcome: 'done', ...counts })

  const pendingTotal = async (name: string) => {
    const status = (await mv!.status()).find((s) => s.name === name)
    return status?.pending?.total
  }

  it('single-table GROUP BY', async () => {
    const view = defineView({
      name: 'orders_per_customer',
      key: ['customer_id'],
      query: sql`
        SELECT customer_id, count(*) AS order_count, sum(amount_cents) AS total_cents
        FROM orders GROUP BY customer_id`,
      sources: { orders: { customer_id: 'customer_id' } },
    })
    const columns = ['customer_id', 'order_count', 'total_cents']
    await open([view])
    await expectBackfilled((await update())[view.name], view)
    await expectSame(view, columns)

    await addOrder({ id: 11, customer_id: 2, amount_cents: 10, status: 'paid' }) // 2 updated
    await addOrder({ id: 12, customer_id: 8, amount_cents: 10, status: 'paid' }) // 8 inserted
    await run(sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 1`) // 1 updated
    await run(sql`UPDATE orders SET customer_id = 5 WHERE id = 6`) // 3 deleted (its only order), 5 updated
    await run(sql`DELETE FROM orders WHERE customer_id = 4`) // 4 deleted
    await run(sql`UPDATE orders SET status = status WHERE customer_id = 7`) // logged, unchanged
    expect(await pendingTotal(view.name)).toBe(7) // keys 1, 2, 3, 4, 5, 7, 8
    expectCounts((await update())[view.name], { inserted: 1, updated: 3, deleted: 2 })
    await expectSame(view, columns)
    expect(await pendingTotal(view.name)).toBe(0)

    // Nothing changed since: an update writes nothing.
    expect((await update())[view.name]).toMatchObject({
      outcome: 'done',
      inserted: 0,
      updated: 0,
      deleted: 0,
      batches: 0,
    })
  })

  it('join aggregate with a WHERE filter (the canonical customer_totals)', async () => {
    const columns = ['customer_id', 'region', 'order_count', 'total_cents']
    await open([customerTotals], 3)
    // Paid orders of existing customers: 1 (2 orders), 2, 3, 4 (NULL region); 7 does not exist.
    const first = (await update())[customerTotals.name]
    await expectBackfilled(first, customerTotals)
    expect(first!.inserted).toBe(4)
    await expectSame(customerTotals, columns)

    await run(sql`UPDATE orders SET status = 'paid' WHERE id = 9`) // 5 enters the filter: inserted
    await run(sql`UPDATE orders SET status = 'pending' WHERE id = 6`) // 3 leaves it: deleted
    await run(sql`UPDATE customers SET region = 'west' WHERE id = 2`) // 2 updated
    await run(sql`DELETE FROM customers WHERE id = 4`) // parent gone: 4 deleted
    await addCustomer(7, 'Gus', 'south') // order 10 finds its customer: 7 inserted
    await run(sql`UPDATE orders SET customer_id = 2 WHERE id = 2`) // 1 and 2 updated
    await run(sql`UPDATE customers SET name = 'Robert' WHERE id = 2`) // no column of the view
    await addOrder({ id: 11, customer_id: 6, amount_cents: 5, status: 'pending' }) // not paid
    const second = (await update())[customerTotals.name]
    expectCounts(second, { inserted: 2, updated: 2, deleted: 2 })
    // Keys 1 to 7 were logged; three keys a batch.
    expect(second!.batches).toBe(3)
    await expectSame(customerTotals, columns)
    const rows = await sql`
      SELECT customer_id::text, region, order_count::text, total_cents::text FROM customer_totals
      ORDER BY customer_id`.execute(database.db)
    expect(rows.rows).toEqual([
      { customer_id: '1', region: 'north', order_count: '1', total_cents: '100' },
      { customer_id: '2', region: 'west', order_count: '2', total_cents: '550' },
      { customer_id: '5', region: 'east', order_count: '1', total_cents: '120' },
      { customer_id: '7', region: 'south', order_count: '1', total_cents: '80' },
    ])
  })

  it('LEFT JOIN with NULLs in non-key columns', async () => {
    const view = defineView({
      name: 'customer_activity',
      key: ['customer_id'],
      query: sql`
        SELECT c.id AS customer_id, c.name, c.region, count(o.id) AS order_count,
               sum(o.amount_cents) AS total_cents, max(o.status) AS top_status
        FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
        GROUP BY c.id, c.name, c.region`,
      sources: { customers: { customer_id: 'id' }, orders: { customer_id: 'customer_id' } },
    })
    const columns = ['customer_id', 'name', 'region', 'order_count', 'total_cents', 'top_status']
    await open([view])
    // Every customer, 6 without orders (NULL sum and status), 4 with a NULL region.
    const first = (await update())[view.name]
    await expectBackfilled(first, view)
    expect(first!.inserted).toBe(6)
    await expectSame(view, columns)

    await run(sql`DELETE FROM orders WHERE id = 6`) // 3 keeps its row, sum becomes NULL: updated
    await run(sql`UPDATE customers SET region = NULL WHERE id = 1`) // value to NULL: updated
    await run(sql`UPDATE customers SET region = 'south' WHERE id = 4`) // NULL to value: updated
    await run(sql`UPDATE customers SET region = NULL WHERE region IS NULL`) // NULL to NULL: unchanged
    await addCustomer(8, 'Hal', null) // inserted, all NULL but the key, name and count
    await run(sql`DELETE FROM customers WHERE id = 5`) // deleted; order 9 stays, unmatched
    await addOrder({ id: 11, customer_id: 6, amount_cents: 70, status: 'paid' }) // 6 updated
    await run(sql`UPDATE orders SET customer_id = 9 WHERE id = 10`) // between missing customers
    expectCounts((await update())[view.name], { inserted: 1, updated: 4, deleted: 1 })
    await expectSame(view, columns)
    const nulls = await sql<{ customer_id: string }>`
      SELECT customer_id::text FROM customer_activity WHERE total_cents IS NULL ORDER BY customer_id`.execute(
      database.db,
    )
    expect(nulls.rows.map((r) => r.customer_id)).toEqual(['3', '8'])
  })

  it('WHERE filter on a one-row-per-order projection', async () => {
    const view = defineView({
      name: 'big_paid_orders',
      key: ['id'],
      query: sql`
        SELECT id, customer_id, amount_cents FROM orders
        WHERE status = 'paid' AND amount_cents >= 200`,
      sources: { orders: { id: 'id' } },
    })
    const columns = ['id', 'customer_id', 'amount_cents']
    await open([view], 2)
    const first = (await update())[view.name]
    await expectBackfilled(first, view)
    expect(first!.inserted).toBe(3) // orders 2, 4, 7
    await expectSame(view, columns)

    await run(sql`UPDATE orders SET amount_cents = 150 WHERE id = 2`) // out by amount: deleted
    await run(sql`UPDATE orders SET amount_cents = 350 WHERE id = 4`) // stays: updated
    await run(sql`UPDATE orders SET id = 70 WHERE id = 7`) // key moves: 7 deleted, 70 inserted
    await run(sql`UPDATE orders SET status = 'paid' WHERE id = 5`) // in by status: inserted
    await run(sql`UPDATE orders SET amount_cents = 200 WHERE id = 1`) // in at the bound: inserted
    await addOrder({ id: 11, customer_id: 3, amount_cents: 1000, status: 'paid' }) // inserted
    await addOrder({ id: 12, customer_id: 3, amount_cents: 1000, status: 'pending' }) // filtered out
    await run(sql`DELETE FROM orders WHERE id = 3`) // was never in
    expectCounts((await update())[view.name], { inserted: 4, updated: 1, deleted: 2 })
    await expectSame(view, columns)

    await run(sql`DELETE FROM orders WHERE id = 11`) // deleted
    await run(sql`UPDATE orders SET status = 'refunded' WHERE id = 5`) // out by status: deleted
    await run(sql`UPDATE orders SET customer_id = 1 WHERE id = 70`) // updated
    expectCounts((await update())[view.name], { inserted: 0, updated: 1, deleted: 2 })
    await expectSame(view, columns)
  })

  it('count(DISTINCT …)', async () => {
    const view = defineView({
      name: 'order_variety',
      key: ['customer_id'],
      query: sql`
        SELECT customer_id, count(DISTINCT status) AS statuses, count(DISTINCT amount_cents) AS amounts
        FROM orders GROUP BY customer_id`,
      sources: { orders: { customer_id: 'customer_id' } },
    })
    const columns = ['customer_id', 'statuses', 'amounts']
    await open([view])
    await expectBackfilled((await update())[view.name], view)
    await expectSame(view, columns)

    await addOrder({ id: 11, customer_id: 1, amount_cents: 100, status: 'paid' }) // duplicate: unchanged
    await addOrder({ id: 12, customer_id: 3, amount_cents: 60, status: 'pending' }) // 3 updated
    await run(sql`DELETE FROM orders WHERE id = 8`) // 4 loses 'refunded': updated
    await run(sql`UPDATE orders SET status = 'pending' WHERE id = 4`) // 2 all pending: updated
    await run(sql`DELETE FROM orders WHERE id = 9`) // 5 has no order left: deleted
    await addOrder({ id: 13, customer_id: 9, amount_cents: 5, status: 'paid' }) // 9 inserted
    expectCounts((await update())[view.name], { inserted: 1, updated: 3, deleted: 1 })
    await expectSame(view, columns)
  })

  it('min/max', async () => {
    const view = defineView({
      name: 'order_range',
      key: ['customer_id'],
      query: sql`
        SELECT customer_id, min(amount_cents) AS smallest, max(amount_cents) AS largest,
               min(status) AS first_status
        FROM orders GROUP BY customer_id`,
      sources: { orders: { customer_id: 'customer_id' } },
    })
    const columns = ['customer_id', 'smallest', 'largest', 'first_status']
    await open([view])
    await expectBackfilled((await update())[view.name], view)
    await expectSame(view, columns)

    await run(sql`UPDATE orders SET amount_cents = 300 WHERE id = 2`) // between min and max: unchanged
    await run(sql`DELETE FROM orders WHERE id = 3`) // 1 loses its max (700 -> 300): updated
    await run(sql`UPDATE orders SET amount_cents = 1000 WHERE id = 4`) // 2's min goes up: updated
    await run(sql`UPDATE orders SET customer_id = 4 WHERE id = 6`) // 3 deleted; 4's min drops: updated
    await addOrder({ id: 11, customer_id: 7, amount_cents: 80, status: 'paid' }) // same values: unchanged
    expectCounts((await update())[view.name], { inserted: 0, updated: 3, deleted: 1 })
    await expectSame(view, columns)
    const rows = await sql`
      SELECT customer_id::text, smallest::text, largest::text FROM order_range
      WHERE customer_id IN (1, 2, 4)
      ORDER BY customer_id`.execute(database.db)
    expect(rows.rows).toEqual([
      { customer_id: '1', smallest: '100', largest: '300' },
      { customer_id: '2', smallest: '900', largest: '1000' },
      { customer_id: '4', smallest: '50', largest: '600' },
    ])
  })

  it('one row per order, denormalized from orders and customers (SQL-mapped source)', async () => {
    const view = defineView({
      name: 'order_rows',
      key: ['id'],
      query: sql`
        SELECT o.id, o.customer_id, o.amount_cents, o.status, c.name AS customer_name, c.region
        FROM orders o JOIN customers c ON c.id = o.customer_id`,
      sources: {
        orders: { id: 'id' },
        // customers does not hold the order id: its changed rows name orders through a query.
        customers: sql`SELECT o.id FROM orders o JOIN changed c ON c.id = o.customer_id`,
      },
    })
    const columns = ['id', 'customer_id', 'amount_cents', 'status', 'customer_name', 'region']
    await open([view], 2)
    const first = (await update())[view.name]
    await expectBackfilled(first, view)
    expect(first!.inserted).toBe(9) // all but order 10, whose customer does not exist
    await expectSame(view, columns)

    await run(sql`UPDATE customers SET name = 'Ada L.' WHERE id = 1`) // orders 1, 2, 3 updated
    await run(sql`DELETE FROM customers WHERE id = 2`) // parent gone: orders 4, 5 deleted
    await addCustomer(7, 'Gus', 'south') // order 10 inserted
    await run(sql`UPDATE orders SET customer_id = 3 WHERE id = 9`) // moves to another customer: updated
    await run(sql`UPDATE orders SET id = 60 WHERE id = 6`) // key moves: 6 deleted, 60 inserted
    await run(sql`UPDATE customers SET region = region WHERE id = 4`) // orders 7, 8 logged, unchanged
    await addOrder({ id: 11, customer_id: 6, amount_cents: 1, status: 'paid' }) // inserted
    await addOrder({ id: 12, customer_id: 99, amount_cents: 2, status: 'paid' }) // no customer 99
    // Staged customers rows: old and new of each UPDATE, the deleted and the inserted row.
    expect((await mv!.status())[0]!.pending!.detail.staged).toBe(6)
    expectCounts((await update())[view.name], { inserted: 3, updated: 4, deleted: 3 })
    await expectSame(view, columns)

    // A parent changes key: its orders (60, 9) lose it, order 12 finds customer 99.
    await run(sql`UPDATE customers SET id = 99 WHERE id = 3`)
    await run(sql`DELETE FROM orders WHERE customer_id = 1`) // 1, 2, 3 deleted
    expectCounts((await update())[view.name], { inserted: 1, updated: 0, deleted: 5 })
    await expectSame(view, columns)
    expect(await pendingTotal(view.name)).toBe(0)
  })

  it('keys named many times, staged or logged, are recomputed once', async () => {
    const view = defineView({
      name: 'order_rows',
      key: ['id'],
      query: sql`
        SELECT o.id, o.amount_cents, c.name AS customer_name
        FROM orders o JOIN customers c ON c.id = o.customer_id`,
      sources: {
        orders: { id: 'id' },
        customers: sql`SELECT o.id FROM orders o JOIN changed c ON c.id = o.customer_id`,
      },
    })
    const columns = ['id', 'amount_cents', 'customer_name']
    await open([view], 2)
    await expectBackfilled((await update())[view.name], view)

    await run(sql`UPDATE customers SET name = 'Di 2' WHERE id = 4`) // orders 7, 8
    for (const name of ['Ada 2', 'Ada 3', 'Ada 4']) {
      await run(sql`UPDATE customers SET name = ${name} WHERE id = 1`) // orders 1, 2, 3, each time
    }
    for (let i = 0; i < 3; i++) {
      await run(sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE id IN (9, 10)`) // 10: no customer
    }
    // Seven distinct keys (1, 2, 3, 7, 8, 9, 10), two a batch: four batches, whatever the
    // number of staged rows and log rows that name them.
    const result = (await update())[view.name]
    expectCounts(result, { inserted: 0, updated: 6, deleted: 0 })
    expect(result!.batches).toBe(4)
    await expectSame(view, columns)
    expect(await pendingTotal(view.name)).toBe(0)
  })

  it('two-column key', async () => {
    const view = defineView({
      name: 'customer_status_totals',
      key: ['customer_id', 'status'],
      query: sql`
        SELECT o.customer_id, o.status, c.region, count(*) AS order_count,
               sum(o.amount_cents) AS total_cents
        FROM orders o JOIN customers c ON c.id = o.customer_id
        GROUP BY o.customer_id, o.status, c.region`,
      sources: {
        orders: { customer_id: 'customer_id', status: 'status' },
        customers: sql`SELECT o.customer_id, o.status FROM orders o JOIN changed c ON c.id = o.customer_id`,
      },
    })
    // The same view with no column-mapped source: its backfill pages through the keys in
    // order of both columns, two at a time, so pages end inside and across customers.
    const paged = defineView({
      ...view,
      name: 'customer_status_totals_paged',
      sources: { ...view.sources, orders: sql`SELECT customer_id, status FROM changed` },
    })
    const views = [view, paged]
    const columns = ['customer_id', 'status', 'region', 'order_count', 'total_cents']
    await open(views, 2)
    const first = await update()
    for (const v of views) {
      await expectBackfilled(first[v.name], v)
      // (1,paid) (1,pending) (2,paid) (2,pending) (3,paid) (4,paid) (4,refunded) (5,pending)
      expect(first[v.name]!.inserted).toBe(8)
      await expectSame(v, columns)
    }

    await run(sql`UPDATE orders SET status = 'paid' WHERE id = 3`) // (1,pending) deleted, (1,paid) updated
    await run(sql`UPDATE orders SET customer_id = 3 WHERE id = 4`) // (2,paid) deleted, (3,paid) updated
    await run(sql`UPDATE customers SET region = 'east' WHERE id = 4`) // (4,paid), (4,refunded) updated
    await addOrder({ id: 11, customer_id: 5, amount_cents: 10, status: 'paid' }) // (5,paid) inserted
    await run(sql`DELETE FROM customers WHERE id = 2`) // (2,pending) deleted
    await addCustomer(7, 'Gus', 'south') // (7,paid) inserted
    const second = await update()
    for (const v of views) {
      expectCounts(second[v.name], { inserted: 2, updated: 4, deleted: 3 })
      await expectSame(v, columns)
    }

    // The same status under two customers, and the same customer under two statuses:
    // (1,refunded) (5,refunded) inserted, (1,paid) updated, (5,pending) deleted.
    await run(sql`UPDATE orders SET status = 'refunded' WHERE id IN (1, 9)`)
    await run(sql`DELETE FROM orders WHERE customer_id = 4`) // (4,paid) (4,refunded) deleted
    const third = await update()
    for (const v of views) {
      expectCounts(third[v.name], { inserted: 2, updated: 1, deleted: 3 })
      await expectSame(v, columns)
    }
  })

  it('text key with awkward values, column-mapped and SQL-mapped', async () => {
    const regionsQuery = sql`
      SELECT region, count(*) AS customers, string_agg(name, ', ' ORDER BY name) AS names
      FROM customers WHERE region IS NOT NULL GROUP BY region`
    const byColumn = defineView({
      name: 'regions_by_column',
      key: ['region'],
      query: regionsQuery,
      sources: { customers: { region: 'region' } },
    })
    // No source maps the key column directly: the backfill pages by key instead of by range.
    const byMapping = defineView({
      name: 'regions_by_mapping',
      key: ['region'],
      query: regionsQuery,
      sources: { customers: sql`SELECT region FROM changed` },
    })
    const awkward = [
      'a,b',
      '"quoted"',
      '{brace}',
      'back\\slash',
      'NULL',
      '',
      ' padded ',
      'Ünïcødé',
      "it's",
      '(1,2)',
    ]
    for (const [i, region] of awkward.entries()) await addCustomer(100 + i, `c${i}`, region)
    await addCustomer(200, 'twin', 'a,b')
    const columns = ['region', 'customers', 'names']
    await open([byColumn, byMapping], 2)
    const first = await update()
    for (const view of [byColumn, byMapping]) {
      await expectBackfilled(first[view.name], view)
      expect(first[view.name]!.inserted).toBe(4 + awkward.length) // north south east west + awkward
      await expectSame(view, columns)
    }
    const keys = await sql<{ region: string }>`
      SELECT region FROM regions_by_mapping ORDER BY region COLLATE "C"`.execute(database.db)
    expect(keys.rows.map((r) => r.region)).toEqual(
      [...awkward, 'north', 'south', 'east', 'west'].sort(),
    )

    await run(sql`UPDATE customers SET region = 'NULL' WHERE id = 200`) // 'a,b' and 'NULL' updated
    await run(sql`UPDATE customers SET region = NULL WHERE region = '{brace}'`) // '{brace}' deleted
    await run(sql`UPDATE customers SET region = '' WHERE region = ' padded '`) // ' padded ' deleted, '' updated
    await run(sql`UPDATE customers SET name = 'Zed' WHERE region = ${'back\\slash'}`) // updated
    await addCustomer(300, 'new', 'new, region') // inserted
    await run(sql`DELETE FROM customers WHERE region = ${"it's"}`) // deleted
    await run(sql`DELETE FROM customers WHERE region = 'north'`) // parents of orders too: deleted
    const second = await update()
    for (const view of [byColumn, byMapping]) {
      expectCounts(second[view.name], { inserted: 1, updated: 4, deleted: 4 })
      await expectSame(view, columns)
    }
  })

  it('a view on another view, updated in dependency order in one run', async () => {
    const regionTotals = defineView({
      name: 'region_totals',
      key: ['region'],
      query: sql`
        SELECT region, count(*) AS customers, sum(order_count) AS order_count,
               sum(total_cents) AS total_cents
        FROM customer_totals WHERE region IS NOT NULL GROUP BY region`,
      sources: { customer_totals: { region: 'region' } },
    })
    const aColumns = ['customer_id', 'region', 'order_count', 'total_cents']
    const bColumns = ['region', 'customers', 'order_count', 'total_cents']
    // Listed in the wrong order on purpose: update orders them.
    await open([regionTotals, customerTotals], 2)
    const first = await mv!.update()
    expect(first.views.map((v) => v.view)).toEqual(['customer_totals', 'region_totals'])
    await expectBackfilled(first.views[0], customerTotals)
    await expectBackfilled(first.views[1], regionTotals)
    expect(first.views[1]!.inserted).toBe(2) // north, south (customer 4's region is NULL)
    await expectSame(customerTotals, aColumns)
    await expectSame(regionTotals, bColumns)

    // customer_totals: 5 and 7 inserted, 1 and 2 updated, 3 and 4 deleted (see the join test).
    await run(sql`UPDATE orders SET status = 'paid' WHERE id = 9`)
    await run(sql`UPDATE orders SET status = 'pending' WHERE id = 6`)
    await run(sql`UPDATE customers SET region = 'west' WHERE id = 2`)
    await run(sql`DELETE FROM customers WHERE id = 4`)
    await addCustomer(7, 'Gus', 'south')
    await run(sql`UPDATE orders SET customer_id = 2 WHERE id = 2`)
    const second = await update()
    expectCounts(second.customer_totals, { inserted: 2, updated: 2, deleted: 2 })
    // region_totals: north loses 3 and half of 1 (updated), south swaps 2 for 7 (updated),
    // west (2) and east (5) are new. Applied in the same run, after customer_totals.
    expectCounts(second.region_totals, { inserted: 2, updated: 2, deleted: 0 })
    await expectSame(customerTotals, aColumns)
    await expectSame(regionTotals, bColumns)

    await run(sql`DELETE FROM orders WHERE customer_id IN (1, 5)`) // north, east lose all customers
    const third = await update()
    expectCounts(third.customer_totals, { inserted: 0, updated: 0, deleted: 2 })
    expectCounts(third.region_totals, { inserted: 0, updated: 0, deleted: 2 })
    await expectSame(customerTotals, aColumns)
    await expectSame(regionTotals, bColumns)
  })

  it('a json column (a denormalized document)', async () => {
    // json has no equality operator: the apply must still tell a changed row from an unchanged one.
    const view = defineView({
      name: 'customer_docs',
      key: ['customer_id'],
      query: sql`
        SELECT c.id AS customer_id,
               json_build_object('name', c.name, 'region', c.region, 'orders',
                 (SELECT json_agg(o.id ORDER BY o.id) FROM orders o WHERE o.customer_id = c.id)) AS doc
        FROM customers c`,
      sources: { customers: { customer_id: 'id' }, orders: { customer_id: 'customer_id' } },
    })
    // EXCEPT needs equality too: compare the documents as text.
    const expectSameDocs = async () => {
      const both = (from: RawBuilder<unknown>) => sql`SELECT customer_id, doc::text FROM ${from}`
      const target = both(sql`customer_docs`)
      const query = both(sql`(${view.query}) AS q`)
      const extra = await sql`${target} EXCEPT ${query}`.execute(database.db)
      const missing = await sql`${query} EXCEPT ${target}`.execute(database.db)
      expect({ extra: extra.rows, missing: missing.rows }).toEqual({ extra: [], missing: [] })
    }
    await open([view])
    await expectBackfilled((await update())[view.name], view)
    await expectSameDocs()

    await addOrder({ id: 11, customer_id: 6, amount_cents: 1, status: 'paid' }) // 6 updated
    await run(sql`UPDATE customers SET name = 'Robert' WHERE id = 2`) // 2 updated
    await run(sql`DELETE FROM customers WHERE id = 5`) // 5 deleted
    await addCustomer(8, 'Hal', 'east') // 8 inserted
    await run(sql`UPDATE customers SET name = name WHERE id = 3`) // unchanged
    await run(sql`UPDATE orders SET amount_cents = 1 WHERE id = 1`) // not in the document
    expectCounts((await update())[view.name], { inserted: 1, updated: 2, deleted: 1 })
    await expectSameDocs()
  })

  const ordersPerCustomer = defineView({
    name: 'orders_per_customer',
    key: ['customer_id'],
    query: sql`
      SELECT customer_id, count(*) AS order_count, sum(amount_cents) AS total_cents
      FROM orders GROUP BY customer_id`,
    sources: { orders: { customer_id: 'customer_id' } },
  })
  const perCustomerColumns = ['customer_id', 'order_count', 'total_cents']

  it('a source over 50,000 rows is backfilled in key ranges, resuming where it stopped', async () => {
    // Orders stored in customer order (correlation 1): a range of customers reads only its pages.
    await run(sql`
      INSERT INTO orders (id, customer_id, amount_cents, status)
      SELECT 100 + g, (g - 1) / 24, g % 97, 'paid' FROM generate_series(1, 120000) AS g`)
    await run(sql`ANALYZE orders`)
    const view = ordersPerCustomer
    await open([view])
    const total = await queryRows(view.query)
    expect(total).toBe(5000)

    // About 120,000 rows make several ranges of customer_id; one batch fills the first (the
    // lowest ids), and the run stops with the view still building.
    const first = (await update({ maxBatches: 1 }))[view.name]!
    expect(first).toMatchObject({ outcome: 'partial', batches: 1, updated: 0, deleted: 0 })
    expect(first.inserted).toBeGreaterThan(0)
    expect(first.inserted).toBeLessThan(total)
    expect((await mv!.status())[0]).toMatchObject({ state: 'building' })

    await run(sql`UPDATE orders SET customer_id = 4999 WHERE customer_id = 0`) // filled: deleted
    await run(sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = 125`) // filled (customer 1): updated
    await run(sql`DELETE FROM orders WHERE customer_id = 4998`) // not filled yet: never inserted
    const second = (await update())[view.name]!
    expect(second).toMatchObject({ outcome: 'done', updated: 1, deleted: 1 })
    expect(first.inserted + second.inserted - second.deleted).toBe(await queryRows(view.query))
    await expectSame(view, perCustomerColumns)
    expect((await mv!.status())[0]).toMatchObject({ state: 'ready', pending: { total: 0 } })
  })

  it('a source whose keys lie in no physical order is backfilled in one range', async () => {
    // Every range of customers would read every page of orders: one pass instead.
    await run(sql`
      INSERT INTO orders (id, customer_id, amount_cents, status)
      SELECT 100 + g, (g * 7919) % 5000, g % 97, 'paid' FROM generate_series(1, 120000) AS g`)
    await run(sql`ANALYZE orders`)
    await open([ordersPerCustomer])
    const first = (await update({ maxBatches: 1 }))[ordersPerCustomer.name]!
    // One batch filled it all: the view is ready (the batch limit stops the run right after).
    expect(first).toMatchObject({ batches: 1, inserted: 5000 })
    expect((await mv!.status())[0]).toMatchObject({ state: 'ready' })
    await expectSame(ordersPerCustomer, perCustomerColumns)
  })
})
