import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { defineView, Matview } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// Columns the view does not read come and go on a live source: writers must never notice.
const QUERY = sql`
  SELECT o.id, o.amount, c.name AS customer
  FROM orders o JOIN customers c ON c.id = o.customer_id`
const orderCustomers = defineView({
  name: 'order_customers',
  key: ['id'],
  query: QUERY,
  sources: {
    orders: { id: 'id' },
    customers: sql`SELECT o.id FROM orders o JOIN changed c ON c.id = o.customer_id`,
  },
})

describe.each(DIALECTS)('source schema changes on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await sql`CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, legacy int, note text)`.execute(
        db,
      )
      await sql`CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, amount int NOT NULL)`.execute(
        db,
      )
      await sql`INSERT INTO customers VALUES (1, 'ann', 7, 'x'), (2, 'bob', 8, 'y')`.execute(db)
      await sql`INSERT INTO orders VALUES (10, 1, 100), (11, 2, 200), (12, 1, 300)`.execute(db)
    },
  })

  it('keeps capturing a source mapped by a query after columns are dropped, renamed and added', async () => {
    const mv = await Matview.open({ database, views: [orderCustomers] })
    expect((await mv.update()).views[0]!.outcome).toBe('done')

    await sql`UPDATE customers SET name = 'anne' WHERE id = 1`.execute(database.db)
    await sql`ALTER TABLE customers DROP COLUMN legacy`.execute(database.db)
    await sql`ALTER TABLE customers RENAME COLUMN note TO remark`.execute(database.db)
    await sql`ALTER TABLE customers ADD COLUMN since date`.execute(database.db)
    // Writers go on, before and after the view has seen the change.
    await sql`UPDATE customers SET name = 'robert', remark = 'z' WHERE id = 2`.execute(database.db)
    await sql`INSERT INTO customers (id, name) VALUES (3, 'cy')`.execute(database.db)
    await sql`UPDATE orders SET customer_id = 3 WHERE id = 11`.execute(database.db)

    const [result] = (await mv.update()).views
    expect(result).toMatchObject({ outcome: 'done', inserted: 0, deleted: 0 })
    expect(result!.updated).toBe(3)
    expect(
      await queryDifferences(database.db, 'order_customers', QUERY, ['id', 'amount', 'customer']),
    ).toEqual({ extra: [], missing: [] })
    await mv.close()
  })
})
