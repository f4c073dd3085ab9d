import { sql } from 'kysely'
import { defineView } from '../views/declarative.js'

/**
 * The demo's declarative view: paid totals per region. Orders do not hold the region, so their
 * changes are mapped to regions by a query over the changed rows, evaluated when a batch claims
 * them; customers hold it and map by column.
 */
export const regionTotalsQuery = sql`
  SELECT c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.status = 'paid'
  GROUP BY c.region
`

export const regionTotalsView = defineView({
  name: 'region_totals',
  key: ['region'],
  query: regionTotalsQuery,
  sources: {
    customers: { region: 'region' },
    orders: sql`SELECT c.region FROM customers c JOIN changed o ON o.customer_id = c.id`,
  },
})
