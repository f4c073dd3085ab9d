import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { recomputePerKey } from '../../src/engine/recompute-choice.js'
import { loadViewRuntime } from '../../src/engine/view-runtime.js'
import { type DeclarativeView, defineView, Matview } from '../../src/index.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'
import { customerTotals } from '../support/views.js'

// Grouped by a column no index holds: one key costs a scan of the table.
const groupTotals = defineView({
  name: 'group_totals',
  key: ['grp'],
  query: sql`SELECT grp, count(*) AS n, sum(val) AS total FROM items GROUP BY grp`,
  sources: { items: { grp: 'grp' } },
})

describe.each(DIALECTS)('per-key or = ANY recompute on %s', (dialect) => {
  let mv: Matview
  const database = useTestDatabase(dialect, {
    setup: async (database) => {
      await createDemoSchema(database.db, { customers: 10_000, orders: 30_000 })
      await sql`CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, val int NOT NULL)`.execute(
        database.db,
      )
      await sql`INSERT INTO items SELECT g, g % 200, g % 7 FROM generate_series(1, 20000) AS g`.execute(
        database.db,
      )
      await sql`ANALYZE`.execute(database.db)
      mv = await Matview.open({ database, views: [customerTotals, groupTotals] })
      await mv.update()
    },
    teardown: async () => {
      await mv?.close()
    },
  })

  const choose = async (view: DeclarativeView, keys: number[]) => {
    const runtime = (await loadViewRuntime(database.db, 'matview', view))!
    return recomputePerKey(
      database.db,
      runtime,
      keys.map((k) => [String(k)]),
    )
  }
  const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1)

  it('recomputes key by key when every table is reached through an index on the key', async () => {
    expect(await choose(customerTotals, range(5))).toBe(true)
  })

  it('recomputes with = ANY when a key would cost a scan of its table', async () => {
    expect(await choose(groupTotals, range(5))).toBe(false)
  })
})
