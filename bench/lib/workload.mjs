// The canonical workload of DESIGN: customers and orders, the view customer_totals, and the
// writes the phases make.
import { customerTotalsQuery } from '../../dist/demo/demo-schema.js'
import { defineView } from '../../dist/index.js'
import { ident, sqlText } from './env.mjs'

export const SIZES = {
  full: { customers: 100_000, orders: 2_000_000 },
  small: { customers: 10_000, orders: 200_000 },
  tiny: { customers: 1_000, orders: 20_000 },
}

export { customerTotalsQuery }
export const customerTotalsSql = () => sqlText(customerTotalsQuery)

/** The view under test, over the tables in the search path (`public`). */
export function customerTotalsView(name = 'customer_totals') {
  return defineView({
    name,
    key: ['customer_id'],
    query: customerTotalsQuery,
    sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
  })
}

/**
 * Creates the canonical tables in `schema` with the data of the demo's `createDemoSchema`
 * (values from arithmetic on the row number), computed in bigint: `createDemoSchema` itself
 * overflows int4 (`g * 7919`) past about 271,000 orders, so it cannot build the full size.
 * Every customer gets orders/customers orders; one customer in five has only pending ones.
 */
export async function createTables(env, schema, size) {
  const t = (table) => ident(schema, table)
  if (schema !== 'public') await env.exec(`CREATE SCHEMA ${ident(schema)}`)
  await env.exec(
    `CREATE TABLE ${t('customers')} (id bigint PRIMARY KEY, name text NOT NULL, region text NOT NULL)`,
  )
  await env.exec(`
    CREATE TABLE ${t('orders')} (
      id bigserial PRIMARY KEY,
      customer_id bigint NOT NULL,
      amount_cents bigint NOT NULL,
      status text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    )`)
  await env.exec(`CREATE INDEX orders_customer_id_idx ON ${t('orders')} (customer_id)`)
  await env.exec(
    `INSERT INTO ${t('customers')} (id, name, region)
     SELECT g, 'customer ' || g, (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4]
     FROM generate_series(1, $1::int) AS g`,
    [size.customers],
  )
  await env.exec(
    `INSERT INTO ${t('orders')} (customer_id, amount_cents, status)
     SELECT 1 + (g::bigint * 7919) % $1::int, 100 + (g::bigint * 31) % 10000,
            CASE WHEN g % 5 = 0 THEN 'pending' ELSE 'paid' END
     FROM generate_series(1, $2::int) AS g`,
    [size.customers, size.orders],
  )
}

/** A small seeded generator, so two runs make the same change sets. */
export function rng(seed) {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let x = state
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** `n` distinct integers in [1, max]. */
export function sample(random, n, max) {
  const picked = new Set()
  while (picked.size < Math.min(n, max)) picked.add(1 + Math.floor(random() * max))
  return [...picked]
}

/**
 * A change set of `n` random order updates touching exactly the keys of `n` random customers:
 * one order of each customer gets a new amount, and one in ten of those orders also moves to
 * another customer of the set (so an update names an old and a new key). One UPDATE statement.
 */
export async function changeOrders(env, random, n, customers) {
  const chosen = sample(random, n, customers)
  const { rows } = await env.exec(
    `SELECT DISTINCT ON (customer_id) id::text AS id, customer_id::text AS customer_id
     FROM orders WHERE customer_id = ANY($1::bigint[]) ORDER BY customer_id, id`,
    [chosen],
  )
  const ids = []
  const newCustomers = []
  const deltas = []
  const keys = new Set()
  for (const row of rows) {
    const moves = random() < 0.1
    const to = moves ? String(chosen[Math.floor(random() * chosen.length)]) : row.customer_id
    ids.push(row.id)
    newCustomers.push(to)
    deltas.push(1 + Math.floor(random() * 500))
    keys.add(row.customer_id).add(to)
  }
  await env.exec(
    `UPDATE orders AS o SET amount_cents = o.amount_cents + c.delta, customer_id = c.customer_id
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS c(id, customer_id, delta)
     WHERE o.id = c.id`,
    [ids, newCustomers, deltas],
  )
  return { orders: ids.length, keys: keys.size, ids }
}

/**
 * A burst: `statements` UPDATEs, each of `customers` consecutive order ids. The data maps
 * order g to customer 1 + (g * 7919) mod customers, a bijection on any `customers` consecutive
 * ids, so each statement writes one order of (nearly) every customer and the change log ends
 * up holding about `statements` rows per key.
 */
export async function burst(env, statements, customers) {
  let rows = 0
  for (let i = 0; i < statements; i++) {
    const { count } = await env.exec(
      'UPDATE orders SET amount_cents = amount_cents + 1 WHERE id > $1 AND id <= $2',
      [i * customers, (i + 1) * customers],
    )
    rows += count
  }
  return rows
}
