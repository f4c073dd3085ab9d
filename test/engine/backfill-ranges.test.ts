import { describe, expect, it } from 'vitest'
import { defineView, Matview, sql } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// The backfill fills in ranges of the first key column, with bounds sampled from the source
// column that feeds it. When the key's order differs from the column's (an int column feeding
// a text key: 9000 < 18000 but '18000' < '9000'), the bounds must be ordered as the key
// compares, or the ranges overlap (a key inserted twice: the create fails on a "duplicate
// key") or leave gaps. Issue 12, suspected point.

const ROWS = 27_000 // three ranges of ~10,000 source rows: bounds 9000 and 18000

const itemsByText = defineView({
  name: 'items_by_text',
  key: ['item'],
  query: sql`SELECT i.id::text AS item, i.amount FROM items i`,
  sources: { items: { item: 'id' } },
})

describe.each(DIALECTS)('backfill key ranges on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await sql`CREATE TABLE items (id int PRIMARY KEY, amount int NOT NULL)`.execute(db)
      await sql`INSERT INTO items SELECT i, i % 97 FROM generate_series(1, ${ROWS}) AS i`.execute(
        db,
      )
    },
  })

  it('fills a text key fed by an int column: every key once, the table equals its query', async () => {
    const mv = await Matview.open({ database, views: [itemsByText] })
    try {
      // One range per run: each range has its own pair of bounds (a single run joins the
      // ranges after the first, which hid the bounds' order).
      for (let run = 1; run <= 2; run++) {
        const [partial] = (await mv.update({ maxBatches: 1 })).views
        expect([partial!.outcome, partial!.error, partial!.batches]).toEqual([
          'partial',
          undefined,
          1,
        ])
      }
      const [result] = (await mv.update()).views
      expect([result!.outcome, result!.error]).toEqual(['done', undefined])
      expect(
        await queryDifferences(
          database.db,
          'items_by_text',
          sql`SELECT i.id::text AS item, i.amount FROM items i`,
          ['item', 'amount'],
        ),
      ).toEqual({ extra: [], missing: [] })
      // The same path fills a rebuild's new table.
      const [rebuilt] = (await mv.rebuild(['items_by_text'])).views
      expect([rebuilt!.outcome, rebuilt!.error]).toEqual(['done', undefined])
      const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM items_by_text`.execute(
        database.db,
      )
      expect(Number(rows[0]!.n)).toBe(ROWS)
    } finally {
      await mv.close()
    }
  })
})
