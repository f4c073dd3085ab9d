import { setTimeout as sleep } from 'node:timers/promises'
import type { RawBuilder } from 'kysely'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { type DeclarativeView, defineView, type Kysely, Matview, sql } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import {
  DIALECTS,
  type DialectName,
  freshDatabase,
  type TestDatabase,
} from '../support/dialects.js'
import { customerTotals } from '../support/views.js'

// Concurrency and failure of declarative views: writers committing while `update` runs, the
// parent/child race of the DESIGN (Capture), batches that fail, a worker killed mid-batch, two
// updates of one view at once. Each test ends as a user would check it: the target equals the
// query, and nothing waits in the change log.

const CUSTOMERS = 200
const ORDERS = 2000
const REGIONS = ['north', 'south', 'east', 'west', 'moon', 'mars']

/** Keyed by a parent's column: an order names its key only through its customer. */
const regionTotalsQuery = sql`
  SELECT c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.status = 'paid'
  GROUP BY c.region
`
const regionTotals = defineView({
  name: 'region_totals',
  key: ['region'],
  query: regionTotalsQuery,
  sources: {
    customers: { region: 'region' },
    orders: sql`SELECT c.region FROM changed o JOIN customers c ON c.id = o.customer_id`,
  },
})

/** Orders denormalized with their customer's region: a customer names its keys through orders. */
const orderRegionsQuery = sql`
  SELECT o.id AS order_id, o.customer_id, c.region, o.amount_cents, o.status
  FROM orders o JOIN customers c ON c.id = o.customer_id
`
const orderRegions = defineView({
  name: 'order_regions',
  key: ['order_id'],
  query: orderRegionsQuery,
  sources: {
    orders: { order_id: 'id' },
    customers: sql`SELECT o.id AS order_id FROM orders o JOIN changed c ON c.id = o.customer_id`,
  },
})

const CHECKED: Record<string, { query: RawBuilder<unknown>; columns: string[] }> = {
  customer_totals: {
    query: customerTotalsQuery,
    columns: ['customer_id', 'region', 'order_count', 'total_cents'],
  },
  region_totals: { query: regionTotalsQuery, columns: ['region', 'order_count', 'total_cents'] },
  order_regions: {
    query: orderRegionsQuery,
    columns: ['order_id', 'customer_id', 'region', 'amount_cents', 'status'],
  },
}

/** `{ view: { extra, missing } }` for the views named: all empty when every target is right. */
async function differences(db: Kysely<any>, names: string[]) {
  const found: Record<string, { extra: unknown[]; missing: unknown[] }> = {}
  for (const name of names) {
    const { query, columns } = CHECKED[name]!
    found[name] = await queryDifferences(db, name, query, columns)
  }
  return found
}

function inSync(names: string[]) {
  return Object.fromEntries(names.map((n) => [n, { extra: [], missing: [] }]))
}

/**
 * The distinct keys (as text) waiting for a view, found through the catalog: in its change log,
 * or captured in its inbox and not yet moved to the log.
 */
async function loggedKeys(db: Kysely<any>, view: string, keyColumn: string): Promise<string[]> {
  const { rows: ids } = await sql<{ id: string }>`
    SELECT id FROM matview.views WHERE name = ${view}`.execute(db)
  expect(ids).toHaveLength(1)
  const log = sql.id('matview', `log_${ids[0]!.id}`)
  const inbox = sql.id('matview', `inbox_${ids[0]!.id}`)
  const { rows } = await sql<{ k: string }>`
    SELECT ${sql.id(keyColumn)}::text AS k FROM ${log}
    UNION SELECT k::text FROM ${inbox} CROSS JOIN LATERAL unnest(${sql.id(keyColumn)}) AS k`.execute(
    db,
  )
  return rows.map((r) => r.k).sort(byNumber)
}

/** Keys (as text) whose target row differs from the query's row, in either direction. */
async function differingKeys(
  db: Kysely<any>,
  view: string,
  keyColumn: string,
  query: RawBuilder<unknown>,
  columns: string[],
): Promise<string[]> {
  const cols = sql.join(columns.map((c) => sql.id(c)))
  const target = sql.table(view)
  const { rows } = await sql<{ k: string }>`
    SELECT DISTINCT ${sql.id(keyColumn)}::text AS k FROM (
      (SELECT ${cols} FROM ${target} EXCEPT SELECT ${cols} FROM (${query}) AS q)
      UNION ALL
      (SELECT ${cols} FROM (${query}) AS q EXCEPT SELECT ${cols} FROM ${target})
    ) AS d`.execute(db)
  return rows.map((r) => r.k).sort(byNumber)
}

const byNumber = (a: string, b: string) => Number(a) - Number(b)

/** A small seeded PRNG (mulberry32): replay a failing run with MATVIEW_TEST_SEED. */
function prng(seed: number) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <T>(items: readonly T[]) => items[Math.floor(next() * items.length)]!,
  }
}
type Random = ReturnType<typeof prng>

// What a test opened, closed after it whatever happened; the database last (dropping it ends
// every connection still open).
let database: TestDatabase | undefined
let clients: pg.Client[] = []
let matviews: Matview[] = []

afterEach(async () => {
  for (const client of clients) await client.end().catch(() => {})
  for (const mv of matviews) await mv.close().catch(() => {})
  clients = []
  matviews = []
  await database?.close()
  database = undefined
})

async function demoDatabase(dialect: DialectName): Promise<TestDatabase> {
  database = await freshDatabase(dialect)
  await createDemoSchema(database.db, { customers: CUSTOMERS, orders: ORDERS })
  return database
}

async function connectClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: 'concurrency-test' })
  client.on('error', () => {})
  await client.connect()
  clients.push(client)
  return client
}

async function open(
  spec: TestDatabase | string,
  views: DeclarativeView[],
  batchSize = 50,
): Promise<Matview> {
  const mv = await Matview.open({ database: spec, batchSize, views })
  matviews.push(mv)
  return mv
}

/** Polls until `check` holds; fails after `ms`. */
async function waitFor(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

/** Backends of this test's database that wait for a lock (a blocked batch). */
async function lockWaiters(observer: pg.Client): Promise<number[]> {
  const { rows } = await observer.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity
     WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
  )
  return rows.map((r) => r.pid)
}

const noPostgres = !DIALECTS.includes('postgres')

// ---------------------------------------------------------------------------------------------
// Writers committing while update runs
// ---------------------------------------------------------------------------------------------

/** What one writer may meet from another (row locks taken in different orders): not a bug. */
const RETRYABLE = new Set(['40P01', '40001'])

interface WriterStats {
  committed: number
  rolledBack: number
  retried: number
  unexpected: string[]
}

/** The random writes: single-row and multi-row, on orders and customers. */
class Writer {
  static highestOrderId = ORDERS

  constructor(
    private readonly client: pg.Client,
    private readonly r: Random,
    private readonly stats: WriterStats,
  ) {}

  private customer = () => this.r.int(1, CUSTOMERS + 20) // a few ids that do not exist (yet)
  private order = () => this.r.int(1, Writer.highestOrderId)

  async write(): Promise<void> {
    const { client, r } = this
    switch (r.int(0, 12)) {
      case 0:
      case 1: {
        const { rows } = await client.query<{ id: string }>(
          `INSERT INTO orders (customer_id, amount_cents, status)
           SELECT $1::bigint + g % 2, $2::bigint + g,
                  CASE WHEN g % 3 = 0 THEN 'pending' ELSE 'paid' END
           FROM generate_series(1, $3::int) AS g RETURNING id`,
          [this.customer(), r.int(1, 5000), r.int(1, 4)],
        )
        for (const row of rows)
          Writer.highestOrderId = Math.max(Writer.highestOrderId, Number(row.id))
        return
      }
      case 2:
        await client.query('UPDATE orders SET amount_cents = amount_cents + $2 WHERE id = $1', [
          this.order(),
          r.int(-50, 50),
        ])
        return
      case 3:
        await client.query(
          `UPDATE orders SET status = CASE WHEN status = 'paid' THEN 'pending' ELSE 'paid' END
           WHERE id = ANY($1::bigint[])`,
          [[this.order(), this.order(), this.order()]],
        )
        return
      case 4: // an order moves to another customer
        await client.query('UPDATE orders SET customer_id = $2 WHERE id = $1', [
          this.order(),
          this.customer(),
        ])
        return
      case 5: // all of a customer's orders move
        await client.query('UPDATE orders SET customer_id = $2 WHERE customer_id = $1', [
          this.customer(),
          this.customer(),
        ])
        return
      case 6:
        await client.query(
          'UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id = $1',
          [this.customer()],
        )
        return
      case 7:
        await client.query('DELETE FROM orders WHERE id = ANY($1::bigint[])', [
          [this.order(), this.order()],
        ])
        return
      case 8:
      case 9: // a customer changes region
        await client.query('UPDATE customers SET region = $2 WHERE id = $1', [
          this.customer(),
          r.pick(REGIONS),
        ])
        return
      case 10: {
        const first = this.customer()
        await client.query('UPDATE customers SET region = $3 WHERE id BETWEEN $1 AND $2', [
          first,
          first + r.int(1, 8),
          r.pick(REGIONS),
        ])
        return
      }
      case 11:
        await client.query('DELETE FROM customers WHERE id = $1', [this.customer()])
        return
      default:
        await client.query(
          `INSERT INTO customers (id, name, region) VALUES ($1::bigint, 'customer ' || $1::text, $2)
           ON CONFLICT (id) DO UPDATE SET region = excluded.region`,
          [this.customer(), r.pick(REGIONS)],
        )
    }
  }

  /** Writes until `stopped()`: single statements, and once `transactions()`, transactions too. */
  async loop(stopped: () => boolean, transactions: () => boolean): Promise<void> {
    const { client, r, stats } = this
    while (!stopped()) {
      const inTransaction = transactions() && r.next() < 0.5
      try {
        if (inTransaction) {
          await client.query('BEGIN')
          const steps = r.int(2, 4)
          for (let i = 0; i < steps; i++) {
            await this.write()
            // Kept open a little, so batches run while it is uncommitted.
            await sleep(r.int(0, 6))
          }
          if (r.next() < 0.1) {
            await client.query('ROLLBACK')
            stats.rolledBack++
          } else {
            await client.query('COMMIT')
            stats.committed++
          }
        } else {
          await this.write()
          stats.committed++
        }
      } catch (error) {
        if (inTransaction) await client.query('ROLLBACK').catch(() => {})
        const code = (error as { code?: string }).code
        if (code && RETRYABLE.has(code)) stats.retried++
        else stats.unexpected.push(String((error as Error).message))
      }
      await sleep(r.int(2, 10))
    }
  }
}

describe.skipIf(noPostgres)('concurrent writers (postgres)', () => {
  it('loses no change committed while update runs: three views, two workers, five writers', async () => {
    const db = await demoDatabase('postgres')
    const seed = Number(process.env.MATVIEW_TEST_SEED ?? Math.floor(Math.random() * 2 ** 31))
    const views = [customerTotals, regionTotals, orderRegions]
    const names = views.map((v) => v.name)
    Writer.highestOrderId = ORDERS

    const stats: WriterStats = { committed: 0, rolledBack: 0, retried: 0, unexpected: [] }
    let stopped = false
    let transactions = false
    const writerClients = await Promise.all(Array.from({ length: 5 }, () => connectClient(db.url!)))
    const writers = writerClients.map((client, i) =>
      new Writer(client, prng(seed + i), stats).loop(
        () => stopped,
        () => transactions,
      ),
    )
    try {
      // Created and backfilled while single-statement writers commit: what they write meanwhile
      // waits in the change logs. (Writers' multi-statement transactions could deadlock with the
      // DDL, which is not what this test is about.)
      const mvA = await open(db, views)
      const created = await mvA.update({ createOnly: true })
      expect(
        created.views.map((v) => [v.view, v.outcome, v.error]),
        `seed ${seed}`,
      ).toEqual(names.map((n) => [n, 'done', undefined]))
      transactions = true

      // Two workers on their own connections apply the views in turn, in small batches and with
      // a time budget (under a steady write load an update without one need not end).
      const mvB = await open(db.url!, views)
      const outcomes: string[] = []
      const failures: string[] = []
      const batches = Object.fromEntries(names.map((n) => [n, 0]))
      const worker = async (mv: Matview, offset: number) => {
        for (let turn = offset; !stopped; turn++) {
          const name = names[turn % names.length]!
          const summary = await mv.update({ views: [name], batchSize: 20, maxTime: 300 })
          for (const v of summary.views) {
            outcomes.push(v.outcome)
            batches[v.view] = batches[v.view]! + v.batches
            if (v.outcome === 'failed') failures.push(`${v.view}: ${v.error}`)
          }
        }
      }
      const workers = Promise.all([worker(mvA, 0), worker(mvB, 1)])
      // At least 3 s of interleaving, and until there is enough of it: a loaded machine commits
      // fewer transactions per second, so the test waits longer instead of failing.
      await sleep(3000)
      await waitFor(
        'writers and both workers to get going',
        async () => stats.committed > 200 && names.every((name) => batches[name]! > 0),
        90_000,
      )
      stopped = true
      await Promise.all(writers)
      await workers

      expect(stats.unexpected, `seed ${seed}`).toEqual([])
      expect(failures, `seed ${seed}`).toEqual([])
      expect(stats.committed, `seed ${seed}`).toBeGreaterThan(200)
      for (const name of names) expect(batches[name], name).toBeGreaterThan(0)
      for (const outcome of outcomes) expect(['done', 'partial', 'skipped']).toContain(outcome)

      // Drain: every write committed above is now in the targets.
      const last = await mvB.update({ batchSize: 20 })
      expect(last.views.map((v) => [v.view, v.outcome])).toEqual(names.map((n) => [n, 'done']))
      expect(await differences(db.db, names), `seed ${seed}`).toEqual(inSync(names))
      for (const status of await mvA.status()) expect(status.pending?.total, status.name).toBe(0)
    } finally {
      stopped = true
      await Promise.allSettled(writers)
    }
  })
})

// ---------------------------------------------------------------------------------------------
// The parent/child race (DESIGN, Capture: a mapping that reads other tables)
// ---------------------------------------------------------------------------------------------

describe.skipIf(noPostgres)('parent/child race (postgres)', () => {
  async function paidTotal(db: Kysely<any>, customer: number): Promise<number> {
    const { rows } = await sql<{ total: string }>`
      SELECT coalesce(sum(amount_cents), 0) AS total FROM orders
      WHERE customer_id = ${customer} AND status = 'paid'`.execute(db)
    return Number(rows[0]!.total)
  }
  async function regionTotal(db: Kysely<any>, region: string): Promise<number | undefined> {
    const { rows } = await sql<{ total_cents: string }>`
      SELECT total_cents FROM region_totals WHERE region = ${region}`.execute(db)
    return rows[0] ? Number(rows[0].total_cents) : undefined
  }

  it.each(['the parent moves first', 'the child is written first'])(
    'an order inserted for a customer that moves region reaches the new region (%s)',
    async (order) => {
      const db = await demoDatabase('postgres')
      const mv = await open(db, [regionTotals])
      expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
      const customer5 = await paidTotal(db.db, 5)
      expect(customer5).toBeGreaterThan(0)

      const a = await connectClient(db.url!)
      const b = await connectClient(db.url!)
      const moveParent = async () => {
        await a.query('BEGIN')
        await a.query(`UPDATE customers SET region = 'moon' WHERE id = 5`)
      }
      const insertChild = async () => {
        await b.query('BEGIN')
        await b.query(
          `INSERT INTO orders (customer_id, amount_cents, status) VALUES (5, 777000, 'paid')`,
        )
      }
      // Both statements run before A commits: B's snapshot sees customer 5 in its old region.
      if (order === 'the parent moves first') {
        await moveParent()
        await insertChild()
      } else {
        await insertChild()
        await moveParent()
      }
      await a.query('COMMIT')

      // An update between A's commit and B's: the new region without B's order, which is right
      // for what is committed now.
      expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
      expect(await regionTotal(db.db, 'moon')).toBe(customer5)
      expect(await differences(db.db, ['region_totals'])).toEqual(inSync(['region_totals']))

      await b.query('COMMIT')
      expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
      expect(await regionTotal(db.db, 'moon')).toBe(customer5 + 777000)
      expect(await differences(db.db, ['region_totals'])).toEqual(inSync(['region_totals']))
    },
  )

  it('an order moved to a customer whose region changes gets the new region', async () => {
    const db = await demoDatabase('postgres')
    const mv = await open(db, [orderRegions])
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    const { rows } = await sql<{ id: string; region: string }>`
      SELECT (SELECT min(id) FROM orders WHERE customer_id = 5)::text AS id,
             (SELECT region FROM customers WHERE id = 6) AS region`.execute(db.db)
    const { id: moved, region: oldRegion } = rows[0]!
    expect(oldRegion).not.toBe('mars')
    const regionOf = async (orderId: string) =>
      (
        await sql<{ region: string }>`
          SELECT region FROM order_regions WHERE order_id = ${orderId}`.execute(db.db)
      ).rows[0]?.region

    const a = await connectClient(db.url!)
    const b = await connectClient(db.url!)
    await a.query('BEGIN')
    await a.query('UPDATE orders SET customer_id = 6 WHERE id = $1', [moved])
    await b.query('BEGIN')
    // B's snapshot does not see the moved order among customer 6's.
    await b.query(`UPDATE customers SET region = 'mars' WHERE id = 6`)
    await a.query('COMMIT')

    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    expect(await regionOf(moved)).toBe(oldRegion)
    expect(await differences(db.db, ['order_regions'])).toEqual(inSync(['order_regions']))

    await b.query('COMMIT')
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    expect(await regionOf(moved)).toBe('mars')
    expect(await differences(db.db, ['order_regions'])).toEqual(inSync(['order_regions']))
  })
})

// ---------------------------------------------------------------------------------------------
// Failed batches: the keys stay in the change log
// ---------------------------------------------------------------------------------------------

describe.each(DIALECTS)('a failed batch on %s', (dialect) => {
  it('keeps its keys in the change log, fails again until fixed, then catches up', async () => {
    const db = await demoDatabase(dialect)
    const mv = await open(db, [customerTotals], 10)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    // A rule the target enforces, that one customer's new total will break.
    await sql`ALTER TABLE customer_totals ADD CONSTRAINT total_below_limit
              CHECK (total_cents < 1000000000)`.execute(db.db)
    await sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(db.db)
    await sql`INSERT INTO orders (customer_id, amount_cents, status)
              VALUES (100, 2000000000, 'paid')`.execute(db.db)
    const columns = CHECKED.customer_totals!.columns
    const everyKey = Array.from({ length: CUSTOMERS }, (_, i) => String(i + 1))
    expect(await loggedKeys(db.db, 'customer_totals', 'customer_id')).toEqual(everyKey)

    const failed = (await mv.update()).views[0]!
    expect(failed).toMatchObject({ view: 'customer_totals', outcome: 'failed' })
    expect(failed.error).toMatch(/^view "customer_totals": .*total_below_limit/)
    expect(failed.error).not.toContain('\n')
    const history = await mv.history('customer_totals', 1)
    expect(history[0]).toMatchObject({ outcome: 'failed', error: failed.error })

    // Whatever the failed run did not apply is still in the log, the failing key included;
    // every key out of the log is right in the target.
    const waiting = await loggedKeys(db.db, 'customer_totals', 'customer_id')
    expect(waiting).toContain('100')
    const wrong = await differingKeys(
      db.db,
      'customer_totals',
      'customer_id',
      customerTotalsQuery,
      columns,
    )
    expect(wrong).toContain('100')
    expect(wrong.filter((k) => !waiting.includes(k))).toEqual([])
    const [status] = await mv.status()
    expect(status!.pending!.detail.keys).toBe(waiting.length)
    expect(status!.lastRun).toMatchObject({ outcome: 'failed' })

    // Still broken: fails again, loses nothing.
    const again = (await mv.update()).views[0]!
    expect(again).toMatchObject({ outcome: 'failed', error: failed.error })
    expect(await loggedKeys(db.db, 'customer_totals', 'customer_id')).toContain('100')

    await sql`ALTER TABLE customer_totals DROP CONSTRAINT total_below_limit`.execute(db.db)
    const fixed = (await mv.update()).views[0]!
    expect(fixed).toMatchObject({ outcome: 'done' })
    expect(fixed.updated).toBeGreaterThanOrEqual(1)
    expect(await differences(db.db, ['customer_totals'])).toEqual(inSync(['customer_totals']))
    expect(await loggedKeys(db.db, 'customer_totals', 'customer_id')).toEqual([])
    expect((await mv.status())[0]!.pending!.total).toBe(0)
  })

  it('keeps the keys whose recompute fails (the query raises) until the data is fixed', async () => {
    const db = await demoDatabase(dialect)
    const inverseQuery = sql`
      SELECT customer_id, count(*) AS order_count, sum(1000000 / amount_cents) AS inverse
      FROM orders GROUP BY customer_id`
    const inverse = defineView({
      name: 'customer_inverse',
      key: ['customer_id'],
      query: inverseQuery,
      sources: { orders: { customer_id: 'customer_id' } },
    })
    const mv = await open(db, [inverse], 10)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    await sql`UPDATE orders SET amount_cents = amount_cents + 7 WHERE customer_id % 3 = 0`.execute(
      db.db,
    )
    await sql`UPDATE orders SET amount_cents = 0
              WHERE id = (SELECT min(id) FROM orders WHERE customer_id = 99)`.execute(db.db)

    const failed = (await mv.update()).views[0]!
    expect(failed).toMatchObject({ view: 'customer_inverse', outcome: 'failed' })
    expect(failed.error).toMatch(/^view "customer_inverse": .*division by zero/)
    expect(failed.error).not.toContain('\n')
    expect(await loggedKeys(db.db, 'customer_inverse', 'customer_id')).toContain('99')

    await sql`UPDATE orders SET amount_cents = 5 WHERE amount_cents = 0`.execute(db.db)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    expect(
      await queryDifferences(db.db, 'customer_inverse', inverseQuery, [
        'customer_id',
        'order_count',
        'inverse',
      ]),
    ).toEqual({ extra: [], missing: [] })
    expect(await loggedKeys(db.db, 'customer_inverse', 'customer_id')).toEqual([])
  })

  it('keeps the changed rows whose key mapping fails until the data is fixed', async () => {
    const db = await demoDatabase(dialect)
    // A mapping that raises while a customer's name is empty (standing in for any mapping that
    // fails on the data of the tables it reads).
    const fragile = defineView({
      name: 'region_totals',
      key: ['region'],
      query: regionTotalsQuery,
      sources: {
        customers: { region: 'region' },
        orders: sql`SELECT c.region FROM changed o JOIN customers c ON c.id = o.customer_id
                    WHERE 100 / length(c.name) > 0`,
      },
    })
    const mv = await open(db, [fragile], 10)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    await sql`UPDATE customers SET name = '' WHERE id = 7`.execute(db.db)
    await sql`UPDATE orders SET amount_cents = amount_cents + 1000, status = 'paid'
              WHERE customer_id IN (6, 7, 8)`.execute(db.db)

    const failed = (await mv.update()).views[0]!
    expect(failed).toMatchObject({ view: 'region_totals', outcome: 'failed' })
    expect(failed.error).toMatch(/^view "region_totals": .*"orders".*division by zero/)
    expect(failed.error).not.toContain('\n')
    const [status] = await mv.status()
    expect(status!.pending!.detail.staged).toBeGreaterThan(0)

    await sql`UPDATE customers SET name = 'customer 7' WHERE id = 7`.execute(db.db)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    expect(await differences(db.db, ['region_totals'])).toEqual(inSync(['region_totals']))
    expect((await mv.status())[0]!.pending!.total).toBe(0)
  })
})

// ---------------------------------------------------------------------------------------------
// Two updates of one view at once; a worker killed mid-batch
// ---------------------------------------------------------------------------------------------

describe.skipIf(noPostgres)('one batch writer per view (postgres)', () => {
  /**
   * A view created, every key changed, and the target row of a key in the middle locked by
   * another session, so that an update blocks in the middle of its run, holding the view.
   */
  async function blockedSetup() {
    const db = await demoDatabase('postgres')
    const mvA = await open(db.url!, [customerTotals], 20)
    expect((await mvA.update()).views[0]).toMatchObject({ outcome: 'done' })
    const { rows } = await sql<{ n: string; middle: string }>`
      SELECT count(*) AS n,
             (SELECT customer_id FROM customer_totals ORDER BY 1 OFFSET 100 LIMIT 1)::text AS middle
      FROM customer_totals`.execute(db.db)
    const { n: targetRows, middle } = rows[0]!
    await sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(db.db)
    const blocker = await connectClient(db.url!)
    await blocker.query('BEGIN')
    await blocker.query('SELECT 1 FROM customer_totals WHERE customer_id = $1 FOR UPDATE', [middle])
    const observer = await connectClient(db.url!)
    const running = mvA.update({ batchSize: 20 })
    await waitFor('the first update to wait on the locked row', async () => {
      return (await lockWaiters(observer)).length > 0
    })
    return { db, blocker, observer, running, targetRows: Number(targetRows), middle }
  }

  it('a second update skips the view another one is applying; the first one applies it all', async () => {
    const { db, blocker, running, targetRows } = await blockedSetup()
    const mvB = await open(db.url!, [customerTotals], 20)
    const [status] = await mvB.status()
    expect(status).toMatchObject({ running: true })

    const second = (await mvB.update({ batchSize: 20 })).views[0]!
    expect(second).toMatchObject({
      outcome: 'skipped',
      reason: 'running elsewhere',
      batches: 0,
      inserted: 0,
      updated: 0,
      deleted: 0,
    })
    // A third one told to wait takes the view over once the first is done.
    const waiting = mvB.update({ batchSize: 20, wait: true, maxTime: 20_000 })

    await blocker.query('COMMIT')
    const first = (await running).views[0]!
    expect(first).toMatchObject({ outcome: 'done', updated: targetRows, inserted: 0, deleted: 0 })
    expect((await waiting).views[0]).toMatchObject({ outcome: 'done', batches: 0 })
    expect(await differences(db.db, ['customer_totals'])).toEqual(inSync(['customer_totals']))
    expect((await mvB.status())[0]).toMatchObject({ running: false, pending: { total: 0 } })
  })

  it('a worker killed in the middle of a batch loses nothing and frees the view', async () => {
    const { db, blocker, observer, running, middle } = await blockedSetup()
    // A lost connection fails the view's run; it must not crash the process (a worker).
    const crashes: unknown[] = []
    const onCrash = (error: unknown) => crashes.push(error)
    process.on('uncaughtException', onCrash)
    try {
      const [victim] = await lockWaiters(observer)
      await observer.query('SELECT pg_terminate_backend($1)', [victim])
      const killed = (await running).views[0]!
      expect(killed).toMatchObject({ outcome: 'failed' })
      expect(killed.error).not.toContain('\n')
      await sleep(100)
    } finally {
      process.off('uncaughtException', onCrash)
    }
    await blocker.query('ROLLBACK')

    // The killed batch rolled back: its keys are still in the log, and every key out of the
    // log is right in the target.
    const waiting = await loggedKeys(db.db, 'customer_totals', 'customer_id')
    expect(waiting).toContain(middle)
    const wrong = await differingKeys(
      db.db,
      'customer_totals',
      'customer_id',
      customerTotalsQuery,
      CHECKED.customer_totals!.columns,
    )
    expect(wrong).toContain(middle)
    expect(wrong.filter((k) => !waiting.includes(k))).toEqual([])

    // Its lock went with its connection: another worker takes the view over and catches up.
    const mvB = await open(db.url!, [customerTotals], 20)
    expect((await mvB.status())[0]).toMatchObject({ running: false })
    const next = (await mvB.update()).views[0]!
    expect(next).toMatchObject({ outcome: 'done' })
    expect(next.updated).toBe(wrong.length)
    expect(await differences(db.db, ['customer_totals'])).toEqual(inSync(['customer_totals']))
    expect(crashes.map((e) => String(e))).toEqual([])
  })
})

// ---------------------------------------------------------------------------------------------
// A burst of writes to a source whose mapping is a query (found by the writers test above: the
// drain of region_totals could not keep up with the writers)
// ---------------------------------------------------------------------------------------------

describe.each(DIALECTS)('a burst of writes through a query mapping on %s', (dialect) => {
  it('recomputes each of the few keys it maps to about once, not once per batch of rows', async () => {
    const db = await demoDatabase(dialect)
    const mv = await open(db, [regionTotals], 50)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
    // 2000 orders change: 4000 changed rows (old and new), all mapping to the 4 regions.
    await sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(db.db)
    const regions = (await mv.status())[0]!.pending!.targetRows!
    expect(regions).toBe(4)

    const result = (await mv.update()).views[0]!
    expect(result).toMatchObject({ outcome: 'done', updated: regions })
    expect(await differences(db.db, ['region_totals'])).toEqual(inSync(['region_totals']))
    // DESIGN, Claim: "a hot key written a thousand times must be recomputed once". Each batch
    // recomputes the regions it claimed; a batch per 50 changed rows recomputes them 80 times.
    expect(result.batches).toBeLessThanOrEqual(regions)
  })
})
