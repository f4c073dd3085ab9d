import { type Kysely, sql } from 'kysely'
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

/**
 * A view whose query raises for an order of 7 cents (division by zero): every batch holding
 * that order's customer fails, the others apply. For the set-aside tests.
 */
export const POISONED_QUERY = sql`SELECT customer_id, sum(1000 / (amount_cents - 7)) AS x
                                  FROM orders GROUP BY customer_id`

export function poisonedView(partitions?: number) {
  return defineView({
    name: 'poisoned',
    key: ['customer_id'],
    query: POISONED_QUERY,
    sources: { orders: { customer_id: 'customer_id' } },
    ...(partitions !== undefined ? { partitions } : {}),
  })
}
