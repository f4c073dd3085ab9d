import { describe, expect, it } from 'vitest'
import { formatStatusTable } from '../../src/cli/commands/status.js'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { defineView, Matview, sql } from '../../src/index.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

const sources = { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } }
const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: customerTotalsQuery,
  sources,
})

describe.each(DIALECTS)('status of a view that needs a rebuild on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await createDemoSchema(db, { customers: 10, orders: 50 })
    },
  })

  const stateColumn = (table: string) => table.split('\n')[1]!.split(/\s{2,}/)[2]

  it('says "needs rebuild" with the reason when a source was truncated', async () => {
    const mv = await Matview.open({ database, views: [customerTotals] })
    await mv.update()
    expect(stateColumn(formatStatusTable(await mv.status()))).toBe('ready')
    await sql`TRUNCATE customers`.execute(database.db)
    const [truncated] = await mv.status()
    expect(truncated).toMatchObject({
      state: 'needs_rebuild',
      stateReason: 'source public.customers was truncated',
    })
    expect(stateColumn(formatStatusTable([truncated!]))).toBe(
      'needs rebuild (source public.customers was truncated)',
    )
    await mv.close()
  })

  it('says "needs rebuild" when the definition changed, before update refuses it', async () => {
    const mv = await Matview.open({ database, views: [customerTotals] })
    await mv.update()
    await mv.close()
    const changed = defineView({
      name: 'customer_totals',
      key: ['customer_id'],
      query: sql`SELECT o.customer_id, count(*) AS n FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY o.customer_id`,
      sources,
    })
    const again = await Matview.open({ database, views: [changed] })
    const [status] = await again.status()
    expect(status).toMatchObject({
      state: 'needs_rebuild',
      stateReason: 'its definition changed since it was created',
    })
    expect(stateColumn(formatStatusTable([status!]))).toBe(
      'needs rebuild (its definition changed since it was created)',
    )
    expect((await again.update()).views[0]!.error).toMatch(/its definition changed/)
    await again.close()
  })
})
