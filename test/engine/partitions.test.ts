import fc from 'fast-check'
import type { RawBuilder } from 'kysely'
import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { connect } from '../../src/dialects/connect.js'
import { REBUILD_MIN_KEYS } from '../../src/engine/choose-strategy.js'
import { type DeclarativeView, defineView, Matview, sql } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// `partitions: N` splits a view's change log by a hash of the key; each partition is applied
// under its own lock. Here on one runner (both dialects): the partitioned path gives the
// query's rows through random writes, the log is what `create` says, a changed N asks for a
// rebuild, rebuild keeps the partitions, drop leaves nothing. Several processes at once:
// partitions-processes.test.ts.

const SOURCES = { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } }
const COLUMNS = ['customer_id', 'region', 'order_count', 'total_cents']
const customerTotals = (partitions?: number) =>
  defineView({
    name: 'customer_totals',
    key: ['customer_id'],
    query: customerTotalsQuery,
    sources: SOURCES,
    ...(partitions === undefined ? {} : { partitions }),
  })

/** A composite key and a source mapped by a query (its rows staged, mapped when applied). */
const statusTotalsQuery = sql`
  SELECT o.customer_id, o.status, c.region, count(*) AS order_count,
         sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id
  GROUP BY o.customer_id, o.status, c.region`
const statusTotals = defineView({
  name: 'status_totals',
  key: ['customer_id', 'status'],
  query: statusTotalsQuery,
  sources: {
    orders: { customer_id: 'customer_id', status: 'status' },
    customers: sql`SELECT o.customer_id, o.status FROM orders o JOIN changed c ON c.id = o.customer_id`,
  },
  partitions: 3,
})
const STATUS_COLUMNS = ['customer_id', 'status', 'region', 'order_count', 'total_cents']

describe('partitions in a definition', () => {
  const base = { name: 'v', key: ['id'], query: sql`SELECT 1 AS id`, sources: { t: { id: 'id' } } }
  it.each([0, 65, '4', 2.5])('refuses partitions: %j with one line naming the field', (value) => {
    expect(() =>
      resolveConfig({ views: [defineView({ ...base, partitions: value as number })] }, { env: {} }),
    ).toThrow(
      /^config: views\.0\.partitions: must be a whole number from 1 to 64 \(hash partitions of the change log\)$/,
    )
  })
  it('accepts 1 to 64', () => {
    for (const partitions of [1, 4, 64])
      expect(
        resolveConfig({ views: [defineView({ ...base, partitions })] }, { env: {} }).views,
      ).toHaveLength(1)
  })
})

describe.each(DIALECTS)('partitioned change logs on %s', (dialect) => {
  let mv: Matview | undefined
  const database = useTestDatabase(dialect, {
    teardown: async () => {
      await mv?.close()
      mv = undefined
    },
  })

  const db = () => database.db
  const open = async (views: DeclarativeView[], batchSize = 7) => {
    await mv?.close()
    mv = await Matview.open({ database, views, batchSize })
    return mv
  }
  const expectEqual = async (name: string, query: RawBuilder<unknown>, columns: string[]) => {
    expect(await queryDifferences(db(), name, query, columns), name).toEqual({
      extra: [],
      missing: [],
    })
  }
  /** The catalog id of the view and the partitions of its change log, by name. */
  const logOf = async (name: string) => {
    const { rows } = await sql<{ id: number }>`
      SELECT id FROM matview.views WHERE name = ${name}`.execute(db())
    const id = Number(rows[0]!.id)
    const { rows: parts } = await sql<{ name: string }>`
      SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = ${`matview.log_${id}`}::regclass ORDER BY c.relname`.execute(db())
    return { id, partitions: parts.map((p) => p.name) }
  }
  /** The partitions each update's runs applied, from the run history. */
  const appliedPartitions = async (view: string) => {
    const { rows } = await sql<{ partition: number; batches: number }>`
      SELECT p.partition, p.batches FROM matview.run_partitions p
      JOIN matview.runs r ON r.id = p.run_id WHERE r.view = ${view}`.execute(db())
    return rows.map((r) => Number(r.partition))
  }

  it('keeps a partitioned view equal to its query through random writes', async () => {
    await createDemoSchema(db(), { customers: 12, orders: 60 })
    const views = [customerTotals(4), statusTotals]
    const m = await open(views)
    expect((await m.update()).views.map((v) => [v.view, v.outcome])).toEqual([
      ['customer_totals', 'done'],
      ['status_totals', 'done'],
    ])
    expect((await logOf('customer_totals')).partitions).toHaveLength(4)
    expect((await logOf('status_totals')).partitions).toHaveLength(3)

    const write = fc.oneof(
      fc.record({
        kind: fc.constant('amount' as const),
        id: fc.integer({ min: 1, max: 70 }),
        by: fc.integer({ min: 1, max: 50 }),
      }),
      fc.record({
        kind: fc.constant('move' as const),
        id: fc.integer({ min: 1, max: 70 }),
        to: fc.integer({ min: 1, max: 14 }),
      }),
      fc.record({
        kind: fc.constant('status' as const),
        customer: fc.integer({ min: 1, max: 14 }),
        status: fc.constantFrom('paid', 'pending', 'refunded'),
      }),
      fc.record({
        kind: fc.constant('insert' as const),
        customer: fc.integer({ min: 1, max: 14 }),
        amount: fc.integer({ min: 1, max: 900 }),
      }),
      fc.record({ kind: fc.constant('delete' as const), id: fc.integer({ min: 1, max: 70 }) }),
      fc.record({
        kind: fc.constant('region' as const),
        customer: fc.integer({ min: 1, max: 14 }),
        region: fc.constantFrom('north', 'south', 'east'),
      }),
    )
    type Write = typeof write extends fc.Arbitrary<infer T> ? T : never
    const writeSql = (w: Write) => {
      switch (w.kind) {
        case 'amount':
          return sql`UPDATE orders SET amount_cents = amount_cents + ${w.by} WHERE id = ${w.id}`
        case 'move':
          return sql`UPDATE orders SET customer_id = ${w.to} WHERE id = ${w.id}
            AND EXISTS (SELECT 1 FROM customers WHERE id = ${w.to})`
        case 'status':
          return sql`UPDATE orders SET status = ${w.status} WHERE customer_id = ${w.customer}`
        case 'insert':
          return sql`INSERT INTO orders (customer_id, amount_cents, status)
            SELECT ${w.customer}, ${w.amount}, 'paid' WHERE EXISTS (SELECT 1 FROM customers WHERE id = ${w.customer})`
        case 'delete':
          return sql`DELETE FROM orders WHERE id = ${w.id}`
        case 'region':
          return sql`UPDATE customers SET region = ${w.region} WHERE id = ${w.customer}`
      }
    }
    const step = fc.oneof(
      { arbitrary: write, weight: 5 },
      {
        arbitrary: fc.record({
          kind: fc.constant('update' as const),
          batchSize: fc.integer({ min: 1, max: 5 }),
          maxBatches: fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }),
        }),
        weight: 2,
      },
    )
    const numRuns = dialect === 'pglite' ? 12 : 15
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps) => {
        for (const st of steps) {
          if (st.kind !== 'update') {
            await writeSql(st).execute(db())
            continue
          }
          const { views } = await m.update({ batchSize: st.batchSize, maxBatches: st.maxBatches })
          for (const v of views)
            expect(st.maxBatches === undefined ? ['done'] : ['done', 'partial']).toContain(
              v.outcome,
            )
          if (st.maxBatches === undefined) {
            await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
            await expectEqual('status_totals', statusTotalsQuery, STATUS_COLUMNS)
          }
        }
        await m.update()
        await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
        await expectEqual('status_totals', statusTotalsQuery, STATUS_COLUMNS)
        for (const status of await m.status()) expect(status.pending?.total, status.name).toBe(0)
      }),
      { numRuns },
    )
    // The drains went partition by partition, every one of them, recorded in the run history.
    expect(new Set(await appliedPartitions('customer_totals'))).toEqual(new Set([0, 1, 2, 3]))
    expect(new Set(await appliedPartitions('status_totals'))).toEqual(new Set([0, 1, 2]))
    expect((await m.verify()).views.map((v) => v.outcome)).toEqual(['equal', 'equal'])
  })

  it('auto rebuilds a partitioned view after a mass update, counting the burst where it waits', async () => {
    const customers = REBUILD_MIN_KEYS + 1_000
    await createDemoSchema(db(), { customers, orders: customers * 3 })
    await open([customerTotals(4)], 200)
    expect((await mv!.update()).views[0]).toMatchObject({ outcome: 'done' })
    const { rows } = await sql<{ id: number }>`
      SELECT id FROM matview.views WHERE name = 'customer_totals'`.execute(db())
    const count = async (table: string) =>
      Number(
        (
          await sql<{
            n: string
          }>`SELECT count(*) AS n FROM ${sql.id('matview', `${table}_${rows[0]!.id}`)}`.execute(
            db(),
          )
        ).rows[0]!.n,
      )
    await sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(db())
    // Cut after one batch, the rebuild is left half-way: the burst was never moved into the
    // log it would throw away.
    const cut = (await mv!.update({ maxBatches: 1 })).views[0]!
    expect(cut).toMatchObject({ outcome: 'partial', reason: 'batch limit' })
    expect(cut.notes).toContainEqual(expect.stringMatching(/^rebuilt: .*strategy auto/))
    expect(await count('inbox')).toBeGreaterThan(0)
    expect(await count('log')).toBe(0)
    expect((await mv!.update()).views[0]).toMatchObject({ outcome: 'done' })
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
  })

  it('sums pending keys over the partitions and notes the partitions a run applied', async () => {
    await createDemoSchema(db(), { customers: 40, orders: 400 })
    const m = await open([customerTotals(4)])
    await m.update()
    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id <= 30`.execute(
      db(),
    )
    const [status] = await m.status()
    expect(status!.pending).toMatchObject({ total: 30, detail: { keys: 30 } })
    expect(status!.pending!.lagSeconds).not.toBeNull()
    const { views } = await m.update()
    expect(views[0]!.outcome).toBe('done')
    expect(views[0]!.notes).toEqual(['applied partitions 0, 1, 2, 3 of 4'])
    expect((await m.status())[0]!.pending).toMatchObject({ total: 0 })
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
  })

  it('asks for a rebuild when N changes; rebuild keeps the partitions; drop leaves nothing', async () => {
    await createDemoSchema(db(), { customers: 30, orders: 300 })
    const hash = async () =>
      (await sql<{ h: string }>`SELECT definition_hash AS h FROM matview.views`.execute(db()))
        .rows[0]!.h
    // `partitions: 1` is no partitioning: the same hash as no field at all.
    let m = await open([customerTotals()])
    await m.update()
    const unsplit = await hash()
    expect((await logOf('customer_totals')).partitions).toEqual([])
    m = await open([customerTotals(1)])
    expect((await m.update()).views[0]!.outcome).toBe('done')

    m = await open([customerTotals(4)])
    const refused = (await m.update()).views[0]!
    expect(refused.outcome).toBe('failed')
    expect(refused.error).toContain('run "matview rebuild customer_totals"')
    await sql`UPDATE orders SET status = 'paid' WHERE id % 3 = 0`.execute(db())
    expect((await m.rebuild(['customer_totals'])).views[0]!.outcome).toBe('done')
    const split = await logOf('customer_totals')
    expect(split.partitions).toEqual([0, 1, 2, 3].map((k) => `log_${split.id}_p${k}`))
    expect(await hash()).not.toBe(unsplit)
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)

    // Rebuilt with the same N: a new log, split the same way.
    expect((await m.rebuild(['customer_totals'])).views[0]!.outcome).toBe('done')
    const again = await logOf('customer_totals')
    expect(again.id).not.toBe(split.id)
    expect(again.partitions).toHaveLength(4)
    await sql`UPDATE orders SET amount_cents = amount_cents + 5 WHERE id % 4 = 0`.execute(db())
    expect((await m.update()).views[0]!.notes).toEqual(['applied partitions 0, 1, 2, 3 of 4'])
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)

    // Back to one: a rebuild again, to a plain log.
    m = await open([customerTotals(2)])
    expect((await m.update()).views[0]!.outcome).toBe('failed')
    expect((await m.rebuild(['customer_totals'])).views[0]!.outcome).toBe('done')
    expect((await logOf('customer_totals')).partitions).toHaveLength(2)

    await m.drop(['customer_totals'])
    const { rows } = await sql<{ name: string }>`
      SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'matview' AND c.relname ~ '^(log|stage)_'
         OR c.relname = 'customer_totals'`.execute(db())
    expect(rows).toEqual([])
  })

  it('takes no partition another runner holds, and applies it once that runner is done', async () => {
    await createDemoSchema(db(), { customers: 20, orders: 200 })
    const m = await open([customerTotals(4)])
    await m.update()
    await sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(db())
    const partition = { schema: 'matview', name: 'customer_totals#p2' }
    // Another runner applies partition 2 now (on PostgreSQL, a session of its own).
    const other = dialect === 'postgres' ? await connect(database.url!) : undefined
    const hold = async (body: () => Promise<void>) => {
      if (other) {
        await other.db.connection().execute(async (conn) => {
          expect(await other.adapter.tryLock(conn, partition)).toBe(true)
          await body()
          await other.adapter.unlock(conn, partition)
        })
      } else {
        expect(await database.adapter.tryLock(database.db, partition)).toBe(true)
        await body()
        await database.adapter.unlock(database.db, partition)
      }
    }
    await hold(async () => {
      const { views } = await m.update()
      expect(views[0]).toMatchObject({
        outcome: 'done',
        notes: ['applied partitions 0, 1, 3 of 4'],
      })
      expect((await m.status())[0]!.pending!.total).toBeGreaterThan(0)
    })
    await other?.close()
    expect((await m.update()).views[0]!.notes).toEqual(['applied partition 2 of 4'])
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
  })

  it('refuses rebuild, drop and verify --repair while a partition applier holds the view', async () => {
    await createDemoSchema(db(), { customers: 10, orders: 50 })
    const m = await open([customerTotals(4)])
    await m.update()
    const key = { schema: 'matview', name: 'customer_totals' }
    const other = dialect === 'postgres' ? await connect(database.url!) : undefined
    const check = async () => {
      expect((await m.rebuild(['customer_totals'])).views[0]!.error).toMatch(
        /being updated or rebuilt by another runner/,
      )
      await expect(m.drop(['customer_totals'])).rejects.toThrow(/being updated by another runner/)
      expect((await m.verify([], { repair: true })).views[0]!.outcome).toBe('failed')
      expect((await m.status())[0]!.running).toBe(true)
      // Another applier joins it.
      await sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(db())
      expect((await m.update()).views[0]!.outcome).toBe('done')
    }
    if (other) {
      await other.db.connection().execute(async (conn) => {
        expect(await other.adapter.tryLockShared(conn, key)).toBe(true)
        await check()
        await other.adapter.unlockShared(conn, key)
      })
      await other.close()
    } else {
      expect(await database.adapter.tryLockShared(database.db, key)).toBe(true)
      await check()
      await database.adapter.unlockShared(database.db, key)
    }
    expect((await m.rebuild(['customer_totals'])).views[0]!.outcome).toBe('done')
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
  })
})
