import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { defineView, Matview, silentLogger, type ViewResult } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// Cross-key queries (audit finding 04): refused at create time with one line, unless the view is
// kept by rebuilds (`strategy: 'rebuild'`); then it stays equal to its query after any writes,
// and nothing runs it by key (update whatever --strategy says, verify --repair, the rebuild's
// catch-up, a truncated source).

/** The README's leaderboard: the top 5 customers by paid total, with their place. */
const LEADERBOARD = sql`
  SELECT customer_id, total_cents, rank() OVER (ORDER BY total_cents DESC) AS place
  FROM (SELECT customer_id, sum(amount_cents) AS total_cents
        FROM orders WHERE status = 'paid' GROUP BY customer_id) AS totals
  ORDER BY total_cents DESC, customer_id
  LIMIT 5`
const LEADERBOARD_COLUMNS = ['customer_id', 'total_cents', 'place']

const leaderboard = (strategy?: 'rebuild') =>
  defineView({
    name: 'leaderboard',
    key: ['customer_id'],
    query: LEADERBOARD,
    sources: { orders: { customer_id: 'customer_id' } },
    ...(strategy ? { strategy } : {}),
  })

/** The demo's repro: every customer's place, by a window over all of them. */
const RANKS = sql`SELECT customer_id, rank() OVER (ORDER BY sum(amount_cents) DESC) AS place
                  FROM orders GROUP BY customer_id`

describe.each(DIALECTS)('views kept by rebuilds on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: (database) => createDemoSchema(database.db, { customers: 40, orders: 300 }),
  })

  const expectInSync = async () =>
    expect(
      await queryDifferences(database.db, 'leaderboard', LEADERBOARD, LEADERBOARD_COLUMNS),
    ).toEqual({ extra: [], missing: [] })

  const targetExists = async (name: string) => {
    const { rows } = await sql<{ found: string | null }>`
      SELECT pg_catalog.to_regclass(${name})::text AS found`.execute(database.db)
    return rows[0]!.found !== null
  }

  it('refuses a LIMIT or a window over every key without strategy rebuild, with one line naming it and the way out, and creates nothing', async () => {
    const ranks = defineView({
      name: 'ranks',
      key: ['customer_id'],
      query: RANKS,
      sources: { orders: { customer_id: 'customer_id' } },
    })
    const mv = await Matview.open({ database, views: [leaderboard(), ranks] })
    try {
      const run = await mv.update()
      expect(run.views.map((v) => v.outcome)).toEqual(['failed', 'failed'])
      expect(run.views[0]!.error).toBe(
        `view "leaderboard": the query is not key-local: LIMIT at line 6, column 9 of the query: LIMIT picks rows by their place among every key's rows, so a write would leave other keys' rows wrong; a top N per key: put the limit in a subquery correlated on the key, or keep the view by rebuilds with strategy: 'rebuild'`,
      )
      expect(run.views[1]!.error).toMatch(
        /^view "ranks": the query is not key-local: rank\(\) OVER \(…\) at line 1, column 21 of the query: a window without PARTITION BY spans every key, .*keep the view by rebuilds with strategy: 'rebuild'$/,
      )
      expect(await targetExists('leaderboard')).toBe(false)
      expect(await targetExists('ranks')).toBe(false)
      const { rows } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM matview.views`.execute(database.db)
      expect(rows[0]!.n).toBe(0)
    } finally {
      await mv.close()
    }
  })

  it('keeps a leaderboard equal to its query through random writes, by rebuilds only', async () => {
    const mv = await Matview.open({ database, views: [leaderboard('rebuild')], batchSize: 7 })
    try {
      expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
      await expectInSync()
      let seed = 7
      const next = (n: number) => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31
        return seed % n
      }
      for (let round = 0; round < 6; round++) {
        for (let i = 0; i < 5; i++) {
          const customer = 1 + next(40)
          switch (next(4)) {
            case 0:
              await sql`INSERT INTO orders (customer_id, amount_cents, status)
                        VALUES (${customer}, ${100 + next(20_000)}, 'paid')`.execute(database.db)
              break
            case 1:
              await sql`UPDATE orders SET amount_cents = amount_cents + ${next(5_000)}
                        WHERE customer_id = ${customer}`.execute(database.db)
              break
            case 2:
              await sql`DELETE FROM orders WHERE id IN (
                          SELECT id FROM orders WHERE customer_id = ${customer} LIMIT 2)`.execute(
                database.db,
              )
              break
            default:
              await sql`UPDATE orders SET status = 'pending' WHERE customer_id = ${customer}`.execute(
                database.db,
              )
          }
        }
        // Even asked for batches: the view's own strategy wins.
        const run = await mv.update(round % 2 === 0 ? { strategy: 'incremental' } : {})
        expect(run.views[0]).toMatchObject({ outcome: 'done' })
        expect(run.views[0]!.notes).toContain(
          "rebuilt instead of applied (the view's strategy rebuild)",
        )
        await expectInSync()
      }
      // Nothing pending: nothing to rebuild.
      const idle = await mv.update()
      expect(idle.views[0]!.notes ?? []).toEqual([])
      expect((await mv.status())[0]).toMatchObject({ state: 'ready', pending: { total: 0 } })
    } finally {
      await mv.close()
    }
  })

  it('rebuilds at once after a TRUNCATE, and verify --repair repairs by a rebuild', async () => {
    const mv = await Matview.open({ database, views: [leaderboard('rebuild')] })
    try {
      await mv.update()
      await sql`TRUNCATE orders`.execute(database.db)
      await sql`INSERT INTO orders (customer_id, amount_cents, status)
                SELECT g, g * 100, 'paid' FROM generate_series(1, 8) AS g`.execute(database.db)
      expect((await mv.status())[0]).toMatchObject({ state: 'needs_rebuild' })
      const run = await mv.update()
      expect(run.views[0]).toMatchObject({ outcome: 'done' })
      expect(run.views[0]!.notes).toContainEqual(expect.stringMatching(/^rebuilt: .*truncated/))
      await expectInSync()

      // Drift made behind matview's back: repaired by a rebuild, not by recomputing keys.
      await sql`UPDATE leaderboard SET place = 99 WHERE place = 1`.execute(database.db)
      const verified = await mv.verify([], { repair: true })
      expect(verified.views[0]).toMatchObject({ outcome: 'repaired', repaired: 1 })
      await expectInSync()
    } finally {
      await mv.close()
    }
  })

  it('dropping strategy rebuild from the definition asks for a rebuild, which refuses the query', async () => {
    const first = await Matview.open({ database, views: [leaderboard('rebuild')] })
    await first.update()
    await first.close()
    const mv = await Matview.open({ database, views: [leaderboard()] })
    try {
      await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (3, 999999, 'paid')`.execute(
        database.db,
      )
      const run = await mv.update()
      expect(run.views[0]!.error).toMatch(/its definition changed since the view was created/)
      const rebuilt = await mv.rebuild(['leaderboard'])
      expect(rebuilt.views[0]).toMatchObject({ outcome: 'failed' })
      expect(rebuilt.views[0]!.error).toMatch(/the query is not key-local: LIMIT at line 6/)
    } finally {
      await mv.close()
    }
  })

  it('the worker rebuilds it when a write is pending, at its poll, and never applies it by key', async () => {
    const mv = await Matview.open({ database, views: [leaderboard('rebuild')] })
    const controller = new AbortController()
    const results: ViewResult[] = []
    const done = mv.worker({
      pollMs: 200,
      signal: controller.signal,
      logger: silentLogger,
      onRun: (r) => results.push(r),
    })
    try {
      await until(async () => results.some((r) => r.outcome === 'done'))
      await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (9, 9999999, 'paid')`.execute(
        database.db,
      )
      await until(async () =>
        results.some((r) =>
          r.notes?.includes("rebuilt instead of applied (the view's strategy rebuild)"),
        ),
      )
      await expectInSync()
      expect(results.every((r) => r.outcome !== 'failed')).toBe(true)
    } finally {
      controller.abort()
      await done
      await mv.close()
    }
  })
})

async function until(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const started = Date.now()
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`not true within ${timeoutMs}ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
