import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../src/config/resolve-config.js'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { defineHandwrittenView, defineView, Matview, sql } from '../../src/index.js'
import { runVerify } from '../../src/runner/verify.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { connectSwappingBeforeLock } from '../support/swap-before-lock.js'
import { useTestDatabase } from '../support/test-database.js'
import { customerTotals } from '../support/views.js'

// Two key columns, a json column (no equality operator) and a source mapped by a query.
const tagTotals = defineView({
  name: 'tag_totals',
  key: ['region', 'tag'],
  query: sql`
    SELECT c.region, t.tag, count(*) AS n, json_build_object('ids', array_agg(t.id ORDER BY t.id)) AS info
    FROM tags t JOIN customers c ON c.id = t.customer_id
    GROUP BY c.region, t.tag`,
  sources: {
    tags: sql`SELECT c.region, changed.tag FROM changed JOIN customers c ON c.id = changed.customer_id`,
    customers: sql`SELECT c.region, t.tag FROM changed c JOIN tags t ON t.customer_id = c.id`,
  },
})

describe.each(DIALECTS)('matview verify on %s', (dialect) => {
  let mv: Matview
  const database = useTestDatabase(dialect, {
    setup: async (database) => {
      await createDemoSchema(database.db, { customers: 50, orders: 500 })
      await sql`CREATE TABLE tags (id int PRIMARY KEY, customer_id bigint NOT NULL, tag text NOT NULL)`.execute(
        database.db,
      )
      await sql`INSERT INTO tags SELECT g, 1 + g % 50, 'tag' || (g % 7) FROM generate_series(1, 300) AS g`.execute(
        database.db,
      )
      mv = await Matview.open({ database, views: [customerTotals, tagTotals] })
      await mv.update()
    },
    teardown: async () => {
      await mv?.close()
    },
  })

  const differences = async (table: string, query: typeof customerTotalsQuery, columns: string[]) =>
    queryDifferences(database.db, table, query, columns)

  it('finds nothing on a view update keeps, in several key ranges', async () => {
    const { views } = await mv.verify([], { rangeKeys: 7 })
    expect(views.map((v) => [v.view, v.outcome, v.rows])).toEqual([
      ['customer_totals', 'equal', 40],
      ['tag_totals', 'equal', 28],
    ])
    // 40 keys (customers 1, 6, 11… have no paid order) in ranges of 7: 5 full ranges, then
    // the open one after the last bound.
    expect(views[0]!.ranges).toBe(6)
  })

  it('reports a changed, a deleted and an extra row by key, and --repair fixes them', async () => {
    // Behind matview's back: the target is written directly, so no change is logged. Keys at
    // both open ends (before the first range, after the last) and in between.
    await sql`UPDATE customer_totals SET total_cents = total_cents + 1 WHERE customer_id = 20`.execute(
      database.db,
    )
    await sql`DELETE FROM customer_totals WHERE customer_id IN (2, 50)`.execute(database.db)
    await sql`INSERT INTO customer_totals VALUES (1000, 'north', 1, 1)`.execute(database.db)
    await sql`UPDATE tag_totals SET info = '{"ids": []}' WHERE region = 'north' AND tag = 'tag3'`.execute(
      database.db,
    )

    const [totals, tags] = (await mv.verify([], { rangeKeys: 7 })).views
    expect(totals).toMatchObject({
      outcome: 'drift',
      missing: { count: 2, first: [{ customer_id: 2 }, { customer_id: 50 }] },
      extra: { count: 1, first: [{ customer_id: 1000 }] },
      different: { count: 1, first: [{ customer_id: 20 }] },
      pending: 0,
      repaired: 0,
    })
    expect(tags).toMatchObject({
      outcome: 'drift',
      missing: { count: 0 },
      extra: { count: 0 },
      different: { count: 1, first: [{ region: 'north', tag: 'tag3' }] },
    })
    // Verifying changed nothing.
    const { extra } = await differences('customer_totals', customerTotalsQuery, ['customer_id'])
    expect(extra.map((row) => String((row as { customer_id: unknown }).customer_id))).toEqual([
      '1000',
    ])

    const repaired = (await mv.verify(['customer_totals', 'tag_totals'], { repair: true })).views
    expect(repaired.map((v) => [v.outcome, v.repaired])).toEqual([
      ['repaired', 4],
      ['repaired', 1],
    ])
    expect((await mv.verify()).views.map((v) => v.outcome)).toEqual(['equal', 'equal'])
    const cols = ['customer_id', 'region', 'order_count', 'total_cents']
    expect(await differences('customer_totals', customerTotalsQuery, cols)).toEqual({
      extra: [],
      missing: [],
    })
    // The repair went through the change log: nothing is left in it.
    const { rows } = await sql`SELECT * FROM matview.log_1`.execute(database.db)
    expect(rows).toEqual([])
  })

  it('counts keys waiting in the change log or a stage as pending, not drift', async () => {
    await sql`UPDATE orders SET amount_cents = amount_cents + 5 WHERE customer_id IN (3, 4)`.execute(
      database.db,
    )
    await sql`UPDATE tags SET tag = 'new' WHERE id = 10`.execute(database.db)
    const views = (await mv.verify()).views
    expect(views.map((v) => [v.outcome, v.pending])).toEqual([
      ['equal', 2],
      // tag 'new' is missing and tag3's row differs: both keys are staged.
      ['equal', 2],
    ])
    await mv.update()
    expect((await mv.verify()).views.map((v) => [v.outcome, v.pending])).toEqual([
      ['equal', 0],
      ['equal', 0],
    ])
  })

  // PostgreSQL only: writers, updates and verify need connections of their own at once.
  it.skipIf(dialect !== 'postgres')(
    'never reports drift while writers write and updates run',
    async () => {
      let writing = true
      const writer = (async () => {
        for (let i = 0; writing; i++) {
          await sql`UPDATE orders SET amount_cents = amount_cents + 1, status = CASE WHEN status = 'paid' THEN 'pending' ELSE 'paid' END
                  WHERE id % 97 = ${i % 97}`.execute(database.db)
        }
      })()
      const updater = (async () => {
        while (writing) await mv.update()
      })()
      let pending = 0
      try {
        for (let round = 0; round < 8; round++) {
          const views = (await mv.verify([], { rangeKeys: 5 })).views
          expect(views.map((v) => v.outcome)).toEqual(['equal', 'equal'])
          pending += views[0]!.pending ?? 0
        }
      } finally {
        writing = false
        await Promise.all([writer, updater])
      }
      // Verify did meet changes not yet applied, and did not call them drift.
      expect(pending).toBeGreaterThan(0)
      await mv.update()
      expect((await mv.verify()).views.map((v) => [v.outcome, v.pending])).toEqual([
        ['equal', 0],
        ['equal', 0],
      ])
    },
  )

  it('refuses a hand-written view by name', async () => {
    const other = await Matview.open({
      database,
      views: [
        customerTotals,
        defineHandwrittenView({ name: 'counts', needsInsert: () => 0, doInsert: () => 0 }),
      ],
    })
    await expect(other.verify(['counts'])).rejects.toThrow(
      'view "counts" is hand-written; verify compares declarative views (defineView) with their query',
    )
    // Unnamed, only the declarative views are compared.
    expect((await other.verify()).views.map((v) => v.view)).toEqual(['customer_totals'])
    await other.close()
  })

  it('reports views it cannot verify, and refuses unknown names', async () => {
    await sql`TRUNCATE orders`.execute(database.db)
    const [totals] = (await mv.verify(['customer_totals'])).views
    expect(totals).toMatchObject({
      outcome: 'not verified',
      reason: expect.stringMatching(
        /^needs rebuild \(.*truncated.*\): run "matview rebuild customer_totals"$/,
      ),
    })
    expect(totals!.rows).toBeUndefined()
    await expect(mv.verify(['nope'])).rejects.toThrow(/unknown view "nope"/)
  })
})

// A swap between the moment `verify --repair` reads the view and the moment it holds the
// view's lock: the repair must work on the view as it is then (the rebuild's id and log), not
// the one the swap replaced. The swap is made to land there by running a rebuild when verify
// asks for the lock. PostgreSQL only: on PGlite the rebuild would need a second connection
// while verify holds one.
describe.skipIf(!DIALECTS.includes('postgres'))(
  'matview verify --repair after a swap on postgres',
  () => {
    const database = useTestDatabase('postgres', {
      setup: async ({ db }) => {
        await createDemoSchema(db, { customers: 50, orders: 500 })
      },
    })

    it('repairs the table a rebuild swapped in just before its lock', async () => {
      const mv = await Matview.open({ database: database.url!, views: [customerTotals] })
      await mv.update()
      const config = resolveConfig({ views: [customerTotals] }, { env: {} })
      const swapFirst = await connectSwappingBeforeLock(
        mv,
        database.url!,
        'customer_totals',
        async (db) => {
          // Drift behind matview's back, in the table the swap put in.
          await sql`UPDATE customer_totals SET total_cents = total_cents + 1 WHERE customer_id = 20`.execute(
            db,
          )
        },
      )
      try {
        const [result] = (await runVerify(swapFirst, config, ['customer_totals'], { repair: true }))
          .views
        expect([result!.outcome, result!.error]).toEqual(['repaired', undefined])
      } finally {
        await swapFirst.close()
        await mv.close()
      }
      expect(
        await queryDifferences(database.db, 'customer_totals', customerTotalsQuery, [
          'customer_id',
          'region',
          'order_count',
          'total_cents',
        ]),
      ).toEqual({ extra: [], missing: [] })
    })
  },
)
