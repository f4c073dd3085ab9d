import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import {
  createCustomerTotalsTable,
  customerTotalsView,
} from '../../src/demo/customer-totals-view.js'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { defineHandwrittenView, Matview } from '../../src/index.js'
import { queryDifferences as differences } from '../../src/views/query-differences.js'
import { DIALECTS, type TestDatabase } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

const COLUMNS = ['customer_id', 'region', 'order_count', 'total_cents']

describe.each(DIALECTS)('hand-written views on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await createDemoSchema(db, { customers: 200, orders: 2000 })
      await createCustomerTotalsTable(db)
    },
  })

  it('fills the cache in batches, then applies only later writes, and equals the query', async () => {
    const mv = await Matview.open({ database, batchSize: 50, views: [customerTotalsView] })
    const first = await mv.update()
    expect(first.views[0]).toMatchObject({ view: 'customer_totals', outcome: 'done' })
    expect(first.views[0]!.inserted).toBeGreaterThan(50)
    expect(first.views[0]!.batches).toBeGreaterThan(1)
    expect(await differences(database.db, 'customer_totals', customerTotalsQuery, COLUMNS)).toEqual(
      { extra: [], missing: [] },
    )

    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE id <= 30`.execute(database.db)
    await sql`DELETE FROM orders WHERE customer_id = 7`.execute(database.db)
    const second = await mv.update()
    expect(second.views[0]!.outcome).toBe('done')
    expect(second.views[0]!.updated).toBeGreaterThan(0)
    expect(second.views[0]!.deleted).toBe(1)
    expect(second.views[0]!.inserted).toBe(0)
    expect(await differences(database.db, 'customer_totals', customerTotalsQuery, COLUMNS)).toEqual(
      { extra: [], missing: [] },
    )

    const [status] = await mv.status()
    expect(status).toMatchObject({ name: 'customer_totals', kind: 'handwritten', running: false })
    expect(status!.pending!.total).toBe(0)
    expect(status!.lastRun).toMatchObject({ outcome: 'done', deleted: 1 })
    const history = await mv.history('customer_totals')
    expect(history).toHaveLength(2)
    await mv.close()
  })

  it('stops at --max-batches with work left and records a partial run', async () => {
    const mv = await Matview.open({ database, batchSize: 20, views: [customerTotalsView] })
    const result = await mv.update({ maxBatches: 2 })
    expect(result.views[0]).toMatchObject({
      outcome: 'partial',
      reason: 'batch limit',
      batches: 2,
      inserted: 40,
    })
    expect(result.views[0]!.pending!.total).toBeGreaterThan(0)
    const rest = await mv.update()
    expect(rest.views[0]!.outcome).toBe('done')
    expect(await differences(database.db, 'customer_totals', customerTotalsQuery, COLUMNS)).toEqual(
      { extra: [], missing: [] },
    )
    await mv.close()
  })

  it('reports a batch that makes no progress as a failure instead of looping', async () => {
    const stuck = defineHandwrittenView({ name: 'stuck', needsInsert: () => 5, doInsert: () => 1 })
    const mv = await Matview.open({ database, views: [stuck, customerTotalsView] })
    const result = await mv.update()
    expect(result.views.find((v) => v.view === 'stuck')).toMatchObject({ outcome: 'failed' })
    expect(result.views.find((v) => v.view === 'stuck')!.error).toMatch(/needsInsert stayed at 5/)
    // The other view still ran.
    expect(result.views.find((v) => v.view === 'customer_totals')!.outcome).toBe('done')
    expect((await mv.history('stuck'))[0]).toMatchObject({ outcome: 'failed' })
    await mv.close()
  })

  it('rolls back a batch whose hook throws, leaving the work pending', async () => {
    const failing = defineHandwrittenView({
      name: 'customer_totals',
      needsInsert: customerTotalsView.needsInsert!,
      async doInsert(ctx) {
        await customerTotalsView.doInsert!(ctx)
        throw new Error('boom')
      },
    })
    const mv = await Matview.open({ database, views: [failing] })
    const result = await mv.update()
    expect(result.views[0]).toMatchObject({
      outcome: 'failed',
      error: 'view "customer_totals": doInsert threw: boom',
    })
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM customer_totals`.execute(
      database.db,
    )
    expect(Number(rows[0]!.n)).toBe(0)
    await mv.close()
  })

  it('skips a view another runner holds, and waits for it with wait', async () => {
    const mv = await Matview.open({ database, views: [customerTotalsView] })
    const key = { schema: 'matview', name: 'customer_totals' }
    const check = async () => {
      const skipped = await mv.update()
      expect(skipped.views[0]).toMatchObject({ outcome: 'skipped', reason: 'running elsewhere' })
      expect((await mv.status())[0]!.running).toBe(true)
    }
    const other = dialect === 'postgres' ? await freshConnection(database) : undefined
    if (other) {
      // Another session holds the lock on a connection of its own.
      await other.db.connection().execute(async (conn) => {
        expect(await other.adapter.tryLock(conn, key)).toBe(true)
        await check()
        await other.adapter.unlock(conn, key)
      })
    } else {
      // PGlite has one connection: another runner in this process holds the lock.
      expect(await database.adapter.tryLock(database.db, key)).toBe(true)
      await check()
      await database.adapter.unlock(database.db, key)
    }
    await other?.close()
    const ran = await mv.update({ wait: true })
    expect(ran.views[0]!.outcome).toBe('done')
    await mv.close()
  })

  it('refuses an unknown view name and lists the known ones', async () => {
    const mv = await Matview.open({ database, views: [customerTotalsView] })
    await expect(mv.update({ views: ['nope'] })).rejects.toThrow(
      /unknown view "nope"; known views: customer_totals/,
    )
    await mv.close()
  })
})

async function freshConnection(database: TestDatabase) {
  const { connect } = await import('../../src/dialects/connect.js')
  return connect(database.url!)
}
