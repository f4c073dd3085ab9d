import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { Matview } from '../../src/index.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'
import { customerTotals } from '../support/views.js'

describe.each(DIALECTS)('run history pruning on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await createDemoSchema(db, { customers: 10, orders: 50 })
    },
  })

  const runs = async () => {
    const { rows } = await sql<{ view: string; age: string; n: number }>`
      SELECT view, CASE WHEN started_at < now() - interval '1 day' THEN 'old' ELSE 'recent' END AS age,
             count(*)::int AS n
      FROM matview.runs GROUP BY 1, 2 ORDER BY 1, 2`.execute(database.db)
    return rows
  }

  it("deletes a view's runs older than keepRuns as update finishes, at most 1,000 a run", async () => {
    const mv = await Matview.open({ database, keepRuns: '1d', views: [customerTotals] })
    await mv.update()
    // A long history: 1,500 runs of two days ago, 3 of an hour ago; another view's old runs.
    await sql`
      INSERT INTO matview.runs (view, started_at, finished_at, outcome)
      SELECT v, now() - age, now() - age, 'done'
      FROM (VALUES ('customer_totals', interval '2 days', 1500),
                   ('customer_totals', interval '1 hour', 3),
                   ('gone', interval '2 days', 5)) AS h(v, age, n),
           generate_series(1, h.n)`.execute(database.db)

    await mv.update()
    expect(await runs()).toEqual([
      { view: 'customer_totals', age: 'old', n: 500 },
      { view: 'customer_totals', age: 'recent', n: 5 },
      { view: 'gone', age: 'old', n: 5 },
    ])
    await mv.update()
    expect(await runs()).toEqual([
      { view: 'customer_totals', age: 'recent', n: 6 },
      { view: 'gone', age: 'old', n: 5 },
    ])
    // The oldest went first: what is left is the newest of the history.
    const history = await mv.history('customer_totals', 100)
    expect(history).toHaveLength(6)
    expect(history[0]!.outcome).toBe('done')
    await mv.close()
  })
})
