import { type Kysely, sql } from 'kysely'
import { defineHandwrittenView } from '../views/handwritten.js'
import { customerTotalsQuery as q } from './demo-schema.js'

/** The cache table the demo's hand-written view fills. */
export async function createCustomerTotalsTable(db: Kysely<any>): Promise<void> {
  await sql`
    CREATE TABLE customer_totals (
      customer_id bigint PRIMARY KEY,
      region text NOT NULL,
      order_count bigint NOT NULL,
      total_cents numeric NOT NULL
    )`.execute(db)
}

// Rows of the query that the cache lacks, holds stale, or holds for no reason: each hook pair
// counts one of these sets and fixes at most a batch of it, in key order.
const missing = sql`
  SELECT q.* FROM (${q}) q
  WHERE NOT EXISTS (SELECT 1 FROM customer_totals t WHERE t.customer_id = q.customer_id)`
const stale = sql`
  SELECT q.* FROM (${q}) q JOIN customer_totals t ON t.customer_id = q.customer_id
  WHERE (t.region, t.order_count, t.total_cents) IS DISTINCT FROM (q.region, q.order_count, q.total_cents)`
const extra = sql`
  SELECT t.customer_id FROM customer_totals t
  WHERE NOT EXISTS (SELECT 1 FROM (${q}) q WHERE q.customer_id = t.customer_id)`

const count = async (db: Kysely<any>, rows: typeof missing) =>
  Number((await sql<{ n: string }>`SELECT count(*) AS n FROM (${rows}) r`.execute(db)).rows[0]!.n)

/**
 * A hand-written view in the seed's model: paid order totals per customer, cached in
 * `customer_totals`, brought up to date by six hooks.
 */
export const customerTotalsView = defineHandwrittenView({
  name: 'customer_totals',
  needsInsert: ({ db }) => count(db, missing),
  needsUpdate: ({ db }) => count(db, stale),
  needsDelete: ({ db }) => count(db, extra),
  async doInsert({ db, batchSize }) {
    const result = await sql`
      INSERT INTO customer_totals (customer_id, region, order_count, total_cents)
      SELECT customer_id, region, order_count, total_cents FROM (${missing}) m
      ORDER BY customer_id LIMIT ${batchSize}`.execute(db)
    return Number(result.numAffectedRows ?? 0)
  },
  async doUpdate({ db, batchSize }) {
    const result = await sql`
      UPDATE customer_totals t
      SET region = s.region, order_count = s.order_count, total_cents = s.total_cents
      FROM (SELECT * FROM (${stale}) s ORDER BY customer_id LIMIT ${batchSize}) s
      WHERE t.customer_id = s.customer_id`.execute(db)
    return Number(result.numAffectedRows ?? 0)
  },
  async doDelete({ db, batchSize }) {
    const result = await sql`
      DELETE FROM customer_totals
      WHERE customer_id IN (SELECT customer_id FROM (${extra}) e ORDER BY customer_id LIMIT ${batchSize})`.execute(
      db,
    )
    return Number(result.numAffectedRows ?? 0)
  },
})
