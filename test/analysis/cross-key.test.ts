import { describe, expect, it } from 'vitest'
import { findCrossKey } from '../../src/analysis/cross-key.js'
import { describeLocation, parseQuery } from '../../src/analysis/parse-query.js'

// The cross-key analysis on PostgreSQL's own parse tree: no database. Each refused construct
// makes one key's rows depend on other keys' rows (or on the clock); each accepted shape keeps
// every key's rows to that key's own source rows.

async function constructs(query: string, key = ['customer_id']): Promise<string[]> {
  return findCrossKey(await parseQuery(query), key).map((f) => f.construct)
}

const TOTALS = 'SELECT customer_id, sum(amount)::bigint AS total FROM orders GROUP BY customer_id'

describe('refused: one key depends on other keys', () => {
  it.each([
    [
      'LIMIT (top N)',
      `SELECT customer_id, total FROM (${TOTALS}) t ORDER BY total DESC LIMIT 3`,
      'LIMIT',
    ],
    ['OFFSET', `SELECT customer_id, total FROM (${TOTALS}) t ORDER BY total OFFSET 10`, 'OFFSET'],
    [
      'FETCH FIRST',
      `SELECT customer_id, total FROM (${TOTALS}) t ORDER BY total DESC FETCH FIRST 3 ROWS ONLY`,
      'FETCH',
    ],
    [
      'FETCH … WITH TIES',
      `SELECT customer_id, total FROM (${TOTALS}) t ORDER BY total DESC FETCH FIRST 3 ROWS WITH TIES`,
      'FETCH',
    ],
    [
      'a window without PARTITION BY (a leaderboard rank)',
      'SELECT customer_id, rank() OVER (ORDER BY sum(amount) DESC) AS place FROM orders GROUP BY customer_id',
      'rank() OVER (…)',
    ],
    [
      'a window partitioned by another column',
      'SELECT o.customer_id, c.region, row_number() OVER (PARTITION BY c.region ORDER BY o.customer_id) AS n FROM orders o JOIN customers c ON c.id = o.customer_id',
      'row_number() OVER (…)',
    ],
    [
      'a named window without the key',
      'SELECT customer_id, sum(amount) OVER w AS running FROM orders WINDOW w AS (ORDER BY id)',
      'sum() OVER (…)',
    ],
    [
      'a window in a subquery, not partitioned by the key',
      `SELECT customer_id, place FROM (SELECT customer_id, dense_rank() OVER (ORDER BY total) AS place FROM (${TOTALS}) t) r`,
      'dense_rank() OVER (…)',
    ],
    [
      'DISTINCT ON over non-key columns',
      'SELECT DISTINCT ON (amount) customer_id, amount FROM orders ORDER BY amount, id',
      'DISTINCT ON',
    ],
    [
      'an uncorrelated aggregate subquery',
      'SELECT customer_id, count(*) AS big FROM orders WHERE amount > (SELECT avg(amount) FROM orders) GROUP BY customer_id',
      'avg()',
    ],
    [
      'a subquery correlated on another column than the key',
      'SELECT c.id AS customer_id, (SELECT max(o.amount) FROM orders o JOIN customers c2 ON c2.id = o.customer_id WHERE c2.region = c.region) AS best_in_region FROM customers c',
      'max()',
    ],
    [
      'a LIMIT in a subquery correlated on another column',
      'SELECT c.id AS customer_id, (SELECT o.amount FROM orders o WHERE o.status = c.region ORDER BY o.amount LIMIT 1) AS x FROM customers c',
      'LIMIT',
    ],
    [
      'an aggregate over another grouping, joined in',
      'SELECT c.id AS customer_id, r.n FROM customers c JOIN (SELECT region, count(*) AS n FROM customers GROUP BY region) r ON r.region = c.region',
      'count()',
    ],
    [
      'GROUP BY without the key',
      'SELECT min(customer_id) AS customer_id, status, count(*) FROM orders GROUP BY status',
      'min()',
    ],
    [
      'an aggregate over the whole table',
      'SELECT 1 AS customer_id, count(*) AS n FROM orders',
      'count()',
    ],
    [
      'now()',
      "SELECT customer_id, count(*) FROM orders WHERE created_at > now() - interval '1 day' GROUP BY customer_id",
      'now()',
    ],
    ['random()', 'SELECT customer_id, random() AS r FROM orders', 'random()'],
    [
      'CURRENT_DATE',
      'SELECT customer_id FROM orders WHERE created_at > CURRENT_DATE',
      'CURRENT_DATE',
    ],
    [
      'a set-returning function over a subquery in the select list',
      'SELECT c.id AS customer_id, generate_series(1, (SELECT count(*) FROM orders)) AS n FROM customers c',
      'generate_series() over a subquery',
    ],
    [
      'WITH RECURSIVE (cannot be classified)',
      'WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT n AS customer_id FROM t',
      'WITH RECURSIVE',
    ],
    [
      'ROLLUP (cannot be classified)',
      'SELECT customer_id, sum(amount) FROM orders GROUP BY ROLLUP (customer_id)',
      'GROUPING SETS / ROLLUP / CUBE',
    ],
    ['TABLESAMPLE', 'SELECT customer_id FROM orders TABLESAMPLE BERNOULLI (10)', 'TABLESAMPLE'],
    [
      'LIMIT on a set operation',
      'SELECT customer_id FROM orders UNION SELECT id FROM customers ORDER BY 1 LIMIT 5',
      'LIMIT',
    ],
    [
      'an aggregate in a CTE not grouped by the key',
      'WITH avg_amount AS (SELECT avg(amount) AS a FROM orders) SELECT o.customer_id, count(*) FROM orders o, avg_amount WHERE o.amount > avg_amount.a GROUP BY o.customer_id',
      'avg()',
    ],
  ])('%s', async (_, query, construct) => {
    expect(await constructs(query)).toContain(construct)
  })

  it('says where: the position of the construct in the query text', async () => {
    const text = `SELECT customer_id, total\nFROM (${TOTALS}) t\nORDER BY total DESC\nLIMIT 3`
    const [finding] = findCrossKey(await parseQuery(text), ['customer_id'])
    expect(finding).toMatchObject({ construct: 'LIMIT' })
    expect(describeLocation(text, finding!.location)).toBe('line 4, column 7')
  })

  it('counts positions in characters after non-ASCII text', async () => {
    const text = "SELECT customer_id, 'é€' AS x FROM orders\nWHERE amount > random()"
    const [finding] = findCrossKey(await parseQuery(text), ['customer_id'])
    expect(describeLocation(text, finding!.location)).toBe('line 2, column 16')
  })
})

describe('accepted: every key depends on its own rows only', () => {
  it.each([
    ['GROUP BY the key', TOTALS],
    [
      'the canonical customer_totals',
      `SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
       FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid'
       GROUP BY o.customer_id, c.region`,
    ],
    ['GROUP BY the key by position', 'SELECT customer_id, count(*) FROM orders GROUP BY 1'],
    [
      'a window partitioned by the key',
      'SELECT id, customer_id, rank() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS place FROM orders',
    ],
    [
      'the latest row per key: a window partitioned by the key in a subquery',
      'SELECT customer_id, amount FROM (SELECT customer_id, amount, row_number() OVER (PARTITION BY customer_id ORDER BY id DESC) AS rn FROM orders) s WHERE rn = 1',
    ],
    [
      'DISTINCT ON the key',
      'SELECT DISTINCT ON (customer_id) customer_id, amount FROM orders ORDER BY customer_id, id DESC',
    ],
    ['plain DISTINCT', 'SELECT DISTINCT customer_id, status FROM orders'],
    [
      'a LIMIT in a subquery correlated on the key',
      'SELECT c.id AS customer_id, (SELECT o.amount FROM orders o WHERE o.customer_id = c.id ORDER BY o.id DESC LIMIT 1) AS last_amount FROM customers c',
    ],
    [
      'a LATERAL top 3 per key',
      'SELECT c.id AS customer_id, t.amounts FROM customers c, LATERAL (SELECT array_agg(amount) AS amounts FROM (SELECT o.amount FROM orders o WHERE o.customer_id = c.id ORDER BY o.amount DESC LIMIT 3) top) t',
    ],
    [
      'an aggregate subquery correlated on the key',
      'SELECT c.id AS customer_id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) AS n FROM customers c',
    ],
    [
      'a semi-join on another table, uncorrelated and plain',
      'SELECT customer_id, count(*) FROM orders WHERE status IN (SELECT status FROM paid_statuses) GROUP BY customer_id',
    ],
    [
      'an aggregate grouped by the key in a subquery joined on the key',
      'SELECT o.customer_id, count(*) AS n, max(r.returns) AS returns FROM orders o JOIN (SELECT customer_id, count(*) AS returns FROM refunds GROUP BY customer_id) r ON r.customer_id = o.customer_id GROUP BY o.customer_id',
    ],
    [
      'a CTE grouped by the key',
      `WITH totals AS (${TOTALS}) SELECT customer_id, total FROM totals`,
    ],
    [
      'UNION ALL of two keyed queries',
      'SELECT customer_id, amount FROM orders UNION ALL SELECT customer_id, -amount FROM refunds',
    ],
    [
      'a set-returning function over the row',
      'SELECT id AS customer_id, unnest(tags) AS tag FROM customers',
    ],
    ['ORDER BY without a limit', `${TOTALS} ORDER BY 2 DESC`],
    ['SELECT * of a keyed subquery', `SELECT * FROM (${TOTALS}) t`],
    ['a limit of ALL', `${TOTALS} LIMIT ALL`],
  ])('%s', async (_, query) => {
    expect(await constructs(query)).toEqual([])
  })

  it('a key of two columns: a window partitioned by both is accepted, by one of them refused', async () => {
    const key = ['customer_id', 'status']
    const both =
      'SELECT customer_id, status, id, rank() OVER (PARTITION BY customer_id, status ORDER BY id) AS n FROM orders'
    const one =
      'SELECT customer_id, status, id, rank() OVER (PARTITION BY customer_id ORDER BY id) AS n FROM orders'
    expect(await constructs(both, key)).toEqual([])
    expect(await constructs(one, key)).toEqual(['rank() OVER (…)'])
  })
})

describe('a key of several columns, one of them fixing the others through a unique key', () => {
  const key = ['region', 'customer_id']
  const byCustomer = `SELECT c.region, c.id AS customer_id,
      (SELECT count(*) FROM orders o WHERE o.customer_id = c.id) AS n
    FROM customers c`
  const byRegion = `SELECT c.region, c.id AS customer_id,
      (SELECT count(*) FROM customers c2 WHERE c2.region = c.region) AS n
    FROM customers c`
  const customersKeyed = {
    uniqueKeys: (t: { name: string }) => (t.name === 'customers' ? [['id']] : []),
  }

  it('a subquery correlated on the customer id is key-local when customers.id is unique (the id fixes the region)', async () => {
    expect(findCrossKey(await parseQuery(byCustomer), key, customersKeyed)).toEqual([])
  })

  it('without knowing that id is unique, it is refused', async () => {
    expect(await constructs(byCustomer, key)).toEqual(['count()'])
  })

  it('correlated on the region only, it is refused whatever the table keys (other customers of the region)', async () => {
    expect(
      findCrossKey(await parseQuery(byRegion), key, customersKeyed).map((f) => f.construct),
    ).toEqual(['count()'])
  })
})

describe('parseQuery', () => {
  it('refuses what is not one query', async () => {
    await expect(parseQuery('SELECT 1; SELECT 2')).rejects.toThrow(/2 statements/)
    await expect(parseQuery('DELETE FROM orders')).rejects.toThrow(/is not a query/)
    await expect(parseQuery('SELEC 1')).rejects.toThrow(/syntax error/)
  })
})
