import { customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { defineView } from '../../src/index.js'

/** The canonical declarative view over the demo schema: both sources hold the key. */
export const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: customerTotalsQuery,
  sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
})
