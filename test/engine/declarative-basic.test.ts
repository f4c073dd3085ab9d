import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { defineView, Matview } from '../../src/index.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'
import { expectCustomerTotalsInSync } from '../support/views.js'

const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: customerTotalsQuery,
  sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
  indexes: [['region']],
})

describe.each(DIALECTS)('declarative views on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await createDemoSchema(db, { customers: 200, orders: 2000 })
    },
  })

  const same = () => expectCustomerTotalsInSync(database.db)

  it('creates, backfills, then applies only what changed', async () => {
    const mv = await Matview.open({ database, batchSize: 50, views: [customerTotals] })
    const first = await mv.update()
    expect(first.views[0]).toMatchObject({ view: 'customer_totals', outcome: 'done' })
    const queryRows = async () =>
      Number(
        (
          await sql<{ n: string }>`SELECT count(*) AS n FROM (${customerTotalsQuery}) AS q`.execute(
            database.db,
          )
        ).rows[0]!.n,
      )
    expect(first.views[0]!.inserted).toBe(await queryRows())
    await same()

    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE id <= 30`.execute(database.db)
    await sql`UPDATE orders SET customer_id = 8 WHERE customer_id = 9`.execute(database.db)
    await sql`DELETE FROM orders WHERE customer_id = 7`.execute(database.db)
    await sql`UPDATE customers SET region = 'moon' WHERE id = 3`.execute(database.db)
    const [status] = await mv.status()
    expect(status!.pending!.detail.keys).toBeGreaterThan(3)
    expect(status!.pending!.lagSeconds).toBeGreaterThanOrEqual(0)
    const second = await mv.update()
    expect(second.views[0]).toMatchObject({ outcome: 'done', deleted: 2, inserted: 0 })
    const rowsNow = await queryRows()
    expect(second.views[0]!.updated).toBeGreaterThan(0)
    await same()
    const [after] = await mv.status()
    expect(after).toMatchObject({ state: 'ready' })
    expect(after!.pending).toMatchObject({ total: 0, targetRows: rowsNow })
    await mv.close()
  })
})
