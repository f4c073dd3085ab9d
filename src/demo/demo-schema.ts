import { type Kysely, sql } from 'kysely'

/**
 * The canonical workload of the DESIGN, scaled down: customers and their orders. Values come
 * from arithmetic on the row number, so every demo run and test sees the same data.
 */
export async function createDemoSchema(
  db: Kysely<any>,
  size: { customers: number; orders: number },
): Promise<void> {
  await sql`
    CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, region text NOT NULL)
  `.execute(db)
  await sql`
    CREATE TABLE orders (
      id bigserial PRIMARY KEY,
      customer_id bigint NOT NULL,
      amount_cents bigint NOT NULL,
      status text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db)
  await sql`CREATE INDEX orders_customer_id_idx ON orders (customer_id)`.execute(db)
  await sql`
    INSERT INTO customers (id, name, region)
    SELECT g, 'customer ' || g, (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4]
    FROM generate_series(1, ${size.customers}::int) AS g
  `.execute(db)
  await sql`
    INSERT INTO orders (customer_id, amount_cents, status)
    SELECT 1 + (g::bigint * 7919) % ${size.customers}::int, 100 + (g * 31) % 10000,
           CASE WHEN g % 5 = 0 THEN 'pending' ELSE 'paid' END
    FROM generate_series(1, ${size.orders}::int) AS g
  `.execute(db)
}

/** The query the demo's view caches: paid totals per customer. */
export const customerTotalsQuery = sql`
  SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.status = 'paid'
  GROUP BY o.customer_id, c.region
`
