import type { Kysely } from 'kysely'
import { expect } from 'vitest'
import { customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { defineView } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'

/** The canonical declarative view over the demo schema: both sources hold the key. */
export const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: customerTotalsQuery,
  sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
})

/** The columns of customer_totals, in the query's order. */
export const CUSTOMER_TOTALS_COLUMNS = ['customer_id', 'region', 'order_count', 'total_cents']

/** Asserts that customer_totals equals its query (EXCEPT both ways is empty). */
export async function expectCustomerTotalsInSync(db: Kysely<any>): Promise<void> {
  expect(
    await queryDifferences(db, 'customer_totals', customerTotalsQuery, CUSTOMER_TOTALS_COLUMNS),
  ).toEqual({ extra: [], missing: [] })
}
