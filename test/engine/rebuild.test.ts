import { setTimeout as sleep } from 'node:timers/promises'
import type { RawBuilder } from 'kysely'
import { beforeEach, describe, expect, it } from 'vitest'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import {
  type DeclarativeView,
  defineHandwrittenView,
  defineView,
  type Kysely,
  Matview,
  type RebuildResult,
  sql,
} from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// `rebuild` as a user meets it: a changed definition or a truncated source brought back, the
// table equal to the new query, readers of the view kept right, the table's dressing kept, and
// an interrupted rebuild resumed or started over without leaving a second table behind.

const SOURCES = { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } }
const COLUMNS = ['customer_id', 'region', 'order_count', 'total_cents']
const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: customerTotalsQuery,
  sources: SOURCES,
  indexes: [['region']],
})

/** The changed definition: another filter and a new column. */
const widerQuery = sql`
  SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents,
         max(o.amount_cents) AS max_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.status IN ('paid', 'pending') AND o.amount_cents > 500
  GROUP BY o.customer_id, c.region`
const WIDER_COLUMNS = [...COLUMNS, 'max_cents']
const widerTotals = defineView({ ...customerTotals, query: widerQuery })

/** A view on customer_totals' table, its key taken straight from the changed rows. */
const bigCustomersQuery = sql`
  SELECT customer_id, region, total_cents FROM customer_totals WHERE total_cents > 20000`
const bigCustomers = defineView({
  name: 'big_customers',
  key: ['customer_id'],
  query: bigCustomersQuery,
  sources: { customer_totals: { customer_id: 'customer_id' } },
})
/** Another, whose key the changed rows give through a mapping query (staged rows). */
const regionCountsQuery = sql`
  SELECT region, count(*) AS customers, sum(total_cents) AS total_cents
  FROM customer_totals GROUP BY region`
const regionCounts = defineView({
  name: 'region_counts',
  key: ['region'],
  query: regionCountsQuery,
  sources: { customer_totals: sql`SELECT DISTINCT ch.region FROM changed AS ch` },
})

describe.each(DIALECTS)('matview rebuild on %s', (dialect) => {
  const open: Matview[] = []
  const database = useTestDatabase(dialect, {
    setup: ({ db }) => createDemoSchema(db, { customers: 200, orders: 3000 }),
    teardown: async () => {
      for (const mv of open.splice(0)) await mv.close()
    },
  })

  const matview = async (views: DeclarativeView[], batchSize = 50) => {
    const mv = await Matview.open({ database, batchSize, views })
    open.push(mv)
    return mv
  }
  const expectEqual = async (table: string, query: RawBuilder<unknown>, columns: string[]) =>
    expect(await queryDifferences(database.db, table, query, columns), table).toEqual({
      extra: [],
      missing: [],
    })

  it('rebuilds a changed definition: the table equals the new query, and update works again', async () => {
    const db = database.db
    await (await matview([customerTotals])).update()
    const before = await leftovers(db)
    const mv = await matview([widerTotals])
    const refused = await mv.update()
    expect(refused.views[0]!.error).toContain('run "matview rebuild customer_totals"')
    // Writes made before the rebuild are in the query it starts from.
    await sql`UPDATE orders SET amount_cents = amount_cents + 1000 WHERE customer_id <= 20`.execute(
      db,
    )

    const { views } = await mv.rebuild(['customer_totals'])
    expect(views).toHaveLength(1)
    const result = views[0]!
    expect(result).toMatchObject({ view: 'customer_totals', outcome: 'done' })
    expect(result.notes).toContain('rebuilt')
    expect(result.rows).toBe(await countOf(db, widerQuery))
    expect(result.durationMs).toBeGreaterThan(0)
    await expectEqual('customer_totals', widerQuery, WIDER_COLUMNS)
    const [status] = await mv.status()
    expect(status).toMatchObject({ state: 'ready', stateReason: null })
    expect(status!.pending).toMatchObject({ total: 0, targetRows: result.rows })
    expect((await mv.history('customer_totals', 1))[0]).toMatchObject({ outcome: 'done' })

    // Incremental again, on the new definition; the old capture is gone with its log.
    await sql`UPDATE orders SET status = 'pending' WHERE id % 7 = 0`.execute(db)
    await sql`DELETE FROM orders WHERE customer_id = 5`.execute(db)
    await sql`UPDATE customers SET region = 'moon' WHERE id = 6`.execute(db)
    const again = await mv.update()
    expect(again.views[0]).toMatchObject({ outcome: 'done' })
    expect(again.views[0]!.updated).toBeGreaterThan(0)
    await expectEqual('customer_totals', widerQuery, WIDER_COLUMNS)
    // As many objects as before, under the new id: no shadow, log or trigger left over.
    const after = await leftovers(db)
    expect(after.tables).toEqual(before.tables)
    expect(after.logs).toHaveLength(1)
    expect(after.logs).not.toEqual(before.logs)
    expect(after.triggers).toHaveLength(before.triggers.length)
  })

  it('brings back a view whose source was truncated; --all-changed finds it, then nothing', async () => {
    const db = database.db
    const mv = await matview([customerTotals])
    await mv.update()
    await sql`TRUNCATE orders`.execute(db)
    await sql`
      INSERT INTO orders (customer_id, amount_cents, status)
      SELECT 1 + g % 50, 100 * g, 'paid' FROM generate_series(1, 400) AS g`.execute(db)
    expect((await mv.status())[0]).toMatchObject({ state: 'needs_rebuild' })
    // Refused, not emptied, until the rebuild.
    expect((await mv.update()).views[0]!.error).toMatch(/needs a rebuild \(source public\.orders/)

    const { views } = await mv.rebuild([], { allChanged: true })
    expect(views.map((v) => [v.view, v.outcome])).toEqual([['customer_totals', 'done']])
    expect(views[0]!.rows).toBe(50)
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
    expect((await mv.status())[0]).toMatchObject({ state: 'ready', stateReason: null })
    expect((await mv.rebuild([], { allChanged: true })).views).toEqual([])

    await sql`UPDATE orders SET amount_cents = 1 WHERE customer_id = 3`.execute(db)
    expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done', updated: 1 })
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
  })

  it('refuses what it cannot rebuild before doing anything', async () => {
    const mv = await matview([customerTotals, bigCustomers])
    await expect(mv.rebuild([])).rejects.toThrow('name the views to rebuild, or use --all-changed')
    await expect(mv.rebuild(['nope'])).rejects.toThrow(/unknown view "nope"; known views:/)
    await expect(mv.rebuild(['customer_totals'])).rejects.toThrow(
      'view "customer_totals" has not been created yet; run "matview update" to create it',
    )
    await mv.update()
    const tagCounts = defineHandwrittenView({
      name: 'tag_counts',
      needsInsert: () => 0,
      doInsert: () => 0,
    })
    const mixed = await Matview.open({ database, views: [customerTotals, tagCounts] })
    open.push(mixed)
    await expect(mixed.rebuild(['tag_counts'])).rejects.toThrow(
      'view "tag_counts" is hand-written; rebuild applies to declarative views (defineView)',
    )
    const itself = defineView({
      ...customerTotals,
      query: sql`SELECT customer_id, region, order_count, total_cents FROM customer_totals`,
      sources: { customer_totals: { customer_id: 'customer_id' } },
    })
    const own = await (await matview([itself])).rebuild(['customer_totals'])
    expect(own.views[0]!.error).toBe(
      'view "customer_totals": its query reads its own table "public.customer_totals"; a view cannot be its own source',
    )
    // A plain view on the table would stop the swap's DROP: named, and nothing is started.
    await sql`CREATE VIEW report AS SELECT region, sum(total_cents) AS s FROM customer_totals GROUP BY region`.execute(
      database.db,
    )
    const before = await leftovers(database.db)
    const { views } = await mv.rebuild(['customer_totals'])
    expect(views[0]).toMatchObject({ outcome: 'failed' })
    expect(views[0]!.error).toBe(
      'cannot rebuild view "customer_totals": the swap replaces table "public.customer_totals", and view "public.report" depends on it (rebuild carries over indexes, grants and comments, not these); drop it first and create it again after the rebuild',
    )
    expect(await leftovers(database.db)).toEqual(before)
    expect((await mv.status())[0]).toMatchObject({ state: 'ready' })
  })

  it('keeps the views that read the rebuilt table equal to their queries, across the swap and after', async () => {
    const db = database.db
    await (await matview([customerTotals, bigCustomers, regionCounts])).update()
    const mv = await matview([widerTotals, bigCustomers, regionCounts])
    const { views } = await mv.rebuild(['customer_totals'])
    expect(views[0]).toMatchObject({ outcome: 'done' })
    expect(views[0]!.notes).toContain('2 reading views given the changes')
    // The differences wait in the readers' logs, like any write to their source.
    const statuses = await mv.status({ views: ['big_customers', 'region_counts'] })
    expect(statuses.map((s) => s.state)).toEqual(['ready', 'ready'])
    expect(statuses.every((s) => s.pending!.total > 0)).toBe(true)
    const first = await mv.update()
    expect(first.views.map((v) => v.outcome)).toEqual(['done', 'done', 'done'])
    await expectEqual('big_customers', bigCustomersQuery, ['customer_id', 'region', 'total_cents'])
    await expectEqual('region_counts', regionCountsQuery, ['region', 'customers', 'total_cents'])

    // The readers' capture is on the new table: later changes flow through it.
    await sql`UPDATE orders SET amount_cents = amount_cents * 3 WHERE customer_id % 4 = 0`.execute(
      db,
    )
    await sql`UPDATE customers SET region = 'moon' WHERE id % 9 = 0`.execute(db)
    await mv.update()
    await expectEqual('customer_totals', widerQuery, WIDER_COLUMNS)
    await expectEqual('big_customers', bigCustomersQuery, ['customer_id', 'region', 'total_cents'])
    await expectEqual('region_counts', regionCountsQuery, ['region', 'customers', 'total_cents'])
  })

  it('refuses to swap in a table a reading view could not read, and keeps the rebuild', async () => {
    await (await matview([customerTotals, bigCustomers])).update()
    const before = await leftovers(database.db)
    const narrower = defineView({
      ...customerTotals,
      query: sql`
        SELECT o.customer_id, c.region, count(*) AS order_count
        FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY o.customer_id, c.region`,
    })
    const mv = await matview([narrower, bigCustomers])
    const { views } = await mv.rebuild(['customer_totals'])
    expect(views[0]).toMatchObject({ outcome: 'failed' })
    expect(views[0]!.error).toBe(
      'view "customer_totals": view "big_customers" reads its table and would break: its query fails on the new table: column "total_cents" does not exist; change "big_customers" first, or keep what it reads',
    )
    // Nothing swapped: both views as they were, the filled table kept for the next run.
    await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
    await expectEqual('big_customers', bigCustomersQuery, ['customer_id', 'region', 'total_cents'])
    expect((await leftovers(database.db)).tables).toHaveLength(before.tables.length + 1)
    const again = await (await matview([widerTotals, bigCustomers])).rebuild(['customer_totals'])
    expect(again.views[0]).toMatchObject({ outcome: 'done' })
    expect(again.views[0]!.notes?.[0]).toBe('started over: the definition changed since it started')
    expect((await leftovers(database.db)).tables).toEqual(before.tables)
  })

  it('carries over index names, owner, comments and grants', async () => {
    const db = database.db
    const mv = await matview([customerTotals])
    await mv.update()
    await sql`ALTER INDEX customer_totals_region_idx RENAME TO totals_by_region`.execute(db)
    await sql`CREATE INDEX by_hand ON customer_totals (total_cents DESC)`.execute(db)
    await sql`COMMENT ON TABLE customer_totals IS ${sql.lit("Paid totals; don't write here")}`.execute(
      db,
    )
    await sql`COMMENT ON COLUMN customer_totals.region IS 'sales region'`.execute(db)
    await sql`COMMENT ON COLUMN customer_totals.order_count IS 'goes with the column'`.execute(db)
    const role = `matview_reader_${Math.random().toString(36).slice(2, 10)}`
    const owner = `${role}_owner`
    await sql`CREATE ROLE ${sql.id(role)}`.execute(db)
    await sql`CREATE ROLE ${sql.id(owner)}`.execute(db)
    try {
      await sql`ALTER TABLE customer_totals OWNER TO ${sql.id(owner)}`.execute(db)
      await sql`GRANT SELECT ON customer_totals TO ${sql.id(role)}`.execute(db)
      await sql`GRANT UPDATE (region) ON customer_totals TO ${sql.id(role)}`.execute(db)
      // A new definition: a new column, one column fewer, one more index.
      const changed = defineView({
        ...customerTotals,
        query: sql`
          SELECT o.customer_id, c.region, sum(o.amount_cents) AS total_cents, max(o.id) AS last_order
          FROM orders o JOIN customers c ON c.id = o.customer_id
          WHERE o.status = 'paid' GROUP BY o.customer_id, c.region`,
        indexes: [['region'], ['total_cents']],
      })
      const rebuilt = await (await matview([changed])).rebuild(['customer_totals'])
      expect(rebuilt.views[0]).toMatchObject({ outcome: 'done' })
      // Indexes come from the definition; one made by hand is not kept, and that is said.
      expect(rebuilt.views[0]!.notes).toEqual([
        'index "by_hand" dropped: not in the definition',
        'rebuilt',
      ])

      const { rows: indexes } = await sql<{ name: string; definition: string }>`
        SELECT indexname AS name, indexdef AS definition FROM pg_indexes
        WHERE tablename = 'customer_totals' ORDER BY 1`.execute(db)
      expect(indexes.map((i) => i.name)).toEqual([
        'customer_totals_pkey',
        'customer_totals_total_cents_idx',
        'totals_by_region',
      ])
      expect(indexes[2]!.definition).toMatch(/USING btree \(region\)$/)
      const { rows: constraints } = await sql<{ name: string }>`
        SELECT conname AS name FROM pg_constraint
        WHERE conrelid = 'customer_totals'::regclass`.execute(db)
      expect(constraints.map((c) => c.name)).toEqual(['customer_totals_pkey'])
      const { rows } = await sql<Record<string, unknown>>`
        SELECT pg_get_userbyid(relowner) AS owner,
               obj_description('customer_totals'::regclass, 'pg_class') AS comment,
               col_description('customer_totals'::regclass, 2) AS region_comment,
               (SELECT count(*) FROM pg_description WHERE objoid = 'customer_totals'::regclass) AS comments,
               has_table_privilege(${role}, 'customer_totals', 'SELECT') AS can_select,
               has_table_privilege(${role}, 'customer_totals', 'INSERT') AS can_insert,
               has_column_privilege(${role}, 'customer_totals', 'region', 'UPDATE') AS can_update_region,
               has_column_privilege(${role}, 'customer_totals', 'total_cents', 'UPDATE') AS can_update_total
        FROM pg_class WHERE oid = 'customer_totals'::regclass`.execute(db)
      expect(rows[0]).toEqual({
        owner,
        comment: "Paid totals; don't write here",
        region_comment: 'sales region',
        // The table's and region's: order_count's went with its column.
        comments: dialect === 'postgres' ? '2' : 2,
        can_select: true,
        can_insert: false,
        can_update_region: true,
        can_update_total: false,
      })
    } finally {
      await sql`DROP OWNED BY ${sql.id(role)}, ${sql.id(owner)}`.execute(db)
      await sql`DROP ROLE ${sql.id(role)}, ${sql.id(owner)}`.execute(db)
    }
  })

  it('applies the writes made while it runs, and readers always see a whole table', async () => {
    const db = database.db
    await (await matview([customerTotals])).update()
    const keysBefore = await keysOf(db)
    const mv = await matview([widerTotals], 20)
    // Writers that never remove a key: new paid orders, changed amounts, moved customers.
    const write = async (i: number) => {
      await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (${1 + (i % 200)}, ${700 + i}, 'paid')`.execute(
        db,
      )
      await sql`UPDATE orders SET amount_cents = amount_cents + 13 WHERE id = ${1 + ((i * 37) % 3000)}`.execute(
        db,
      )
      await sql`UPDATE customers SET region = ${`r${i % 5}`} WHERE id = ${1 + ((i * 11) % 200)}`.execute(
        db,
      )
    }
    const reads: { keys: Set<string>; wide: boolean }[] = []
    const read = async () => {
      const { rows } = await sql<Record<string, unknown>>`SELECT * FROM customer_totals`.execute(db)
      reads.push({
        keys: new Set(rows.map((r) => String(r.customer_id))),
        wide: rows.length > 0 && 'max_cents' in rows[0]!,
      })
    }
    let result: RebuildResult
    if (dialect === 'pglite') {
      // One connection, so no real concurrency: stop the rebuild once its table is filled,
      // write and read, then let it catch up and swap.
      const filled = await mv.rebuild(['customer_totals'], { maxBatches: 1 })
      expect(filled.views[0]).toMatchObject({ outcome: 'partial', reason: 'batch limit' })
      for (let i = 0; i < 30; i++) {
        await write(i)
        await read()
      }
      result = (await mv.rebuild(['customer_totals'])).views[0]!
      expect(result.notes?.[0]).toBe('resumed')
      // The catch-up applied the writes to the new table before the swap.
      expect(result.updated).toBeGreaterThan(0)
      await write(30)
      await read()
    } else {
      let running = true
      const loop = async (step: (i: number) => Promise<void>) => {
        for (let i = 0; running; i++) await step(i)
      }
      const writers = [loop(write), loop((i) => write(i + 5000))]
      const reader = loop(read)
      await sleep(200)
      result = (await mv.rebuild(['customer_totals'])).views[0]!
      await sleep(200)
      running = false
      await Promise.all([...writers, reader])
    }
    expect(result).toMatchObject({ outcome: 'done' })
    // The reader read the old table and the new one.
    expect(reads.some((r) => !r.wide)).toBe(true)
    expect(reads.some((r) => r.wide)).toBe(true)
    for (const r of reads) {
      const lost = [...keysBefore].filter((k) => !r.keys.has(k))
      expect(lost, 'keys a reader did not see').toEqual([])
    }
    // What was written during the rebuild is in the new table, or waits in its log.
    await mv.update()
    await expectEqual('customer_totals', widerQuery, WIDER_COLUMNS)
  })

  it.runIf(dialect === 'postgres')(
    'a swap that cannot get its lock gives up without harm, and the next run finishes it',
    async () => {
      const db = database.db
      await (await matview([customerTotals])).update()
      const mv = await matview([widerTotals])
      // A long reader holds the table: the swap waits at most lock_timeout, five times.
      const blocker = await new (await import('pg')).default.Client({
        connectionString: database.url,
      })
      await blocker.connect()
      try {
        await blocker.query('BEGIN')
        await blocker.query('SELECT count(*) FROM customer_totals')
        // It gives up (rather than waiting for the reader): the call returns.
        const blocked = await mv.rebuild(['customer_totals'], { lockTimeout: 100 })
        expect(blocked.views[0]).toMatchObject({ outcome: 'failed' })
        expect(blocked.views[0]!.error).toMatch(
          /the swap could not get its locks within 100ms, 5 times .*; the new table is kept: run "matview rebuild customer_totals" again to finish/,
        )
        // Still the old table, whole, and the reader was never in the way of anything else.
        await expectEqual('customer_totals', customerTotalsQuery, COLUMNS)
        expect((await mv.status())[0]).toMatchObject({ state: 'rebuilding' })
      } finally {
        await blocker.query('COMMIT')
        await blocker.end()
      }
      await sql`UPDATE orders SET amount_cents = 99999 WHERE id = 10`.execute(db)
      const done = await mv.rebuild(['customer_totals'])
      expect(done.views[0]).toMatchObject({ outcome: 'done' })
      expect(done.views[0]!.notes?.[0]).toBe('resumed')
      await expectEqual('customer_totals', widerQuery, WIDER_COLUMNS)
    },
  )

  it('rebuilds a view whose names are hostile, quoting every one', async () => {
    const db = database.db
    const schema = `Rëports "R" '; DROP TABLE orders; --`
    const name = `${schema}.Tötals "V" 'q' ☃`
    const total = `Tötal 'cents' "€"`
    await sql`CREATE SCHEMA ${sql.id(schema)}`.execute(db)
    const hostile = (filter: RawBuilder<unknown>) =>
      defineView({
        name,
        key: ['customer_id'],
        query: sql`SELECT customer_id, sum(amount_cents) AS ${sql.id(total)} FROM orders
                   WHERE ${filter} GROUP BY customer_id`,
        sources: { orders: { customer_id: 'customer_id' } },
        indexes: [[total]],
      })
    await (await matview([hostile(sql`status = 'paid'`)])).update()
    const table = sql.id(schema, `Tötals "V" 'q' ☃`)
    const comment = `it's "quoted" \\ and ; DROP TABLE orders; --`
    await sql`COMMENT ON TABLE ${table} IS ${sql.lit(comment)}`.execute(db)
    const changed = hostile(sql`status <> 'paid'`)
    const { views } = await (await matview([changed])).rebuild([name])
    expect(views[0]).toMatchObject({ outcome: 'done' })
    const { rows } = await sql<{ comment: string; differ: string }>`
      SELECT obj_description(c.oid, 'pg_class') AS comment,
             (SELECT count(*) FROM (SELECT * FROM ${table} EXCEPT SELECT * FROM (${changed.query}) q) d) AS differ
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${schema} AND c.relname = ${`Tötals "V" 'q' ☃`}`.execute(db)
    expect(rows).toEqual([{ comment, differ: dialect === 'postgres' ? '0' : 0 }])
    expect(await countOf(db, sql`SELECT * FROM orders`)).toBe(3000)
  })

  describe('stopped half-way', () => {
    // 150,000 source rows: the backfill fills the new table in three key ranges.
    const itemsView = (expression: RawBuilder<unknown>) =>
      defineView({
        name: 'item_values',
        key: ['id'],
        query: sql`SELECT id, grp, ${expression} AS value FROM items`,
        sources: { items: { id: 'id' } },
      })
    const doubled = itemsView(sql`val * 2`)
    const tripled = itemsView(sql`val * 3`)
    const negated = itemsView(sql`-val`)
    const ITEM_COLUMNS = ['id', 'grp', 'value']
    beforeEach(async () => {
      await sql`CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, val int NOT NULL)`.execute(
        database.db,
      )
      await sql`
        INSERT INTO items SELECT g, g % 10, g % 1000 FROM generate_series(1, 150000) AS g`.execute(
        database.db,
      )
      await sql`ANALYZE items`.execute(database.db)
    })

    it('resumes from its checkpoint; update refuses the view meanwhile; nothing is left behind', async () => {
      const db = database.db
      await (await matview([doubled], 1000)).update()
      const before = await leftovers(db)
      const mv = await matview([tripled], 1000)

      const partial = await mv.rebuild(['item_values'], { maxBatches: 1 })
      expect(partial.views[0]).toMatchObject({ outcome: 'partial', reason: 'batch limit' })
      const copied = partial.views[0]!.inserted
      expect(copied).toBeGreaterThan(1000)
      expect(copied).toBeLessThan(150_000)
      const [status] = await mv.status()
      expect(status).toMatchObject({ state: 'rebuilding' })
      // The second table is there, and seen.
      expect((await leftovers(db)).tables).toHaveLength(before.tables.length + 1)
      const refused = await mv.update()
      expect(refused.views[0]!.error).toBe(
        'view "item_values": a rebuild was started and has not finished; run "matview rebuild item_values" to finish it (update leaves it untouched)',
      )
      // The live table still serves the old definition, whole.
      await expectEqual('item_values', doubled.query, ITEM_COLUMNS)

      // Writes meanwhile reach the new table through its own change log.
      await sql`UPDATE items SET val = val + 1 WHERE id % 100 = 0`.execute(db)
      await sql`DELETE FROM items WHERE id > 149000`.execute(db)
      await sql`INSERT INTO items SELECT g, 7, 7 FROM generate_series(200001, 200100) AS g`.execute(
        db,
      )
      const resumed = await mv.rebuild(['item_values'])
      expect(resumed.views[0]).toMatchObject({ outcome: 'done', rows: 149100 })
      expect(resumed.views[0]!.notes?.slice(0, 1)).toEqual(['resumed'])
      // Only what was not copied yet was copied: 149,100 rows in all, not those plus a restart.
      expect(copied + resumed.views[0]!.inserted).toBeLessThan(149_100 + 500)
      await expectEqual('item_values', tripled.query, ITEM_COLUMNS)
      const after = await leftovers(db)
      expect(after.tables).toEqual(before.tables)
      expect(after.logs).toHaveLength(1)
      expect(after.triggers).toHaveLength(before.triggers.length)
    })

    it('a crash between ranges is resumed; a changed definition or a truncated source starts over', async () => {
      const db = database.db
      await (await matview([doubled], 1000)).update()
      const before = await leftovers(db)

      // A crash: the process dies with the second range's work uncommitted.
      let ranges = 0
      const crashed = await (await matview([tripled], 1000)).rebuild(['item_values'], {
        onProgress: (event) => {
          if (event.type === 'progress' && ++ranges === 2) throw new Error('killed')
        },
      })
      expect(crashed.views[0]).toMatchObject({ outcome: 'failed', error: 'killed' })
      expect((await leftovers(db)).tables).toHaveLength(before.tables.length + 1)
      const again = await (await matview([tripled], 1000)).rebuild(['item_values'], {
        maxBatches: 1,
      })
      expect(again.views[0]).toMatchObject({
        outcome: 'partial',
        notes: ['resumed', expect.any(String)],
      })

      // The definition changed since: the half-filled table is dropped, the rebuild starts over.
      const mv = await matview([negated], 1000)
      const partial = await mv.rebuild(['item_values'], { maxBatches: 1 })
      expect(partial.views[0]!.notes?.[0]).toBe(
        'started over: the definition changed since it started',
      )
      expect((await leftovers(db)).tables).toHaveLength(before.tables.length + 1)

      // A source truncated under a rebuild: the new table missed it, so it starts over too.
      await sql`TRUNCATE items`.execute(db)
      await sql`INSERT INTO items SELECT g, 1, g FROM generate_series(1, 500) AS g`.execute(db)
      expect((await mv.status())[0]).toMatchObject({
        state: 'rebuilding',
        stateReason: 'source public.items was truncated',
      })
      const done = await mv.rebuild([], { allChanged: true })
      expect(done.views[0]).toMatchObject({ outcome: 'done', rows: 500 })
      expect(done.views[0]!.notes?.[0]).toBe(
        'started over: source public.items was truncated during the rebuild',
      )
      await expectEqual('item_values', negated.query, ITEM_COLUMNS)
      expect((await mv.status())[0]).toMatchObject({ state: 'ready', stateReason: null })
      const after = await leftovers(db)
      expect(after.tables).toEqual(before.tables)
      expect(after.logs).toHaveLength(1)
      expect(after.triggers).toHaveLength(before.triggers.length)
    })

    it('a definition whose key turns out duplicated is given up; the view keeps its rows', async () => {
      const db = database.db
      const mv0 = await matview([doubled], 1000)
      await mv0.update()
      const before = await leftovers(db)
      const byGroup = defineView({
        ...doubled,
        query: sql`SELECT i.grp AS id, i.grp, i.val AS value FROM items i`,
      })
      const { views } = await (await matview([byGroup], 1000)).rebuild(['item_values'])
      expect(views[0]).toMatchObject({ outcome: 'failed' })
      expect(views[0]!.error).toMatch(
        /^view "item_values": the query returns more than one row for key \(id\)=\(\d+\).*; the rebuild was given up and the view keeps its rows from before$/,
      )
      expect(await leftovers(db)).toEqual(before)
      expect((await mv0.status())[0]).toMatchObject({ state: 'ready' })
      await sql`UPDATE items SET val = 0 WHERE id = 1`.execute(db)
      expect((await mv0.update()).views[0]).toMatchObject({ outcome: 'done', updated: 1 })
      await expectEqual('item_values', doubled.query, ITEM_COLUMNS)
    })

    it('drop during a rebuild removes the second table and its capture too', async () => {
      const db = database.db
      await (await matview([doubled], 1000)).update()
      const mv = await matview([tripled], 1000)
      await mv.rebuild(['item_values'], { maxBatches: 1 })
      await mv.drop(['item_values'])
      const left = await leftovers(db)
      expect(left.tables).toEqual(['public.customers', 'public.items', 'public.orders'])
      expect(left.logs).toEqual([])
      expect(left.triggers).toEqual([])
    })
  })
})

/** matview's objects a rebuild could leave behind: tables in public, logs, triggers. */
async function leftovers(db: Kysely<any>) {
  const { rows: tables } = await sql<{ name: string }>`
    SELECT n.nspname || '.' || c.relname AS name FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'matview')
    ORDER BY 1`.execute(db)
  const { rows: logs } = await sql<{ name: string }>`
    SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'matview' AND c.relkind = 'r' AND c.relname ~ '^(log|stage)_'
    ORDER BY 1`.execute(db)
  const { rows: triggers } = await sql<{ name: string }>`
    SELECT tgname AS name FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`.execute(db)
  return {
    tables: tables.map((r) => r.name),
    logs: logs.map((r) => r.name),
    triggers: triggers.map((r) => r.name),
  }
}

async function keysOf(db: Kysely<any>): Promise<Set<string>> {
  const { rows } = await sql<{
    k: string
  }>`SELECT customer_id::text AS k FROM customer_totals`.execute(db)
  return new Set(rows.map((r) => r.k))
}

async function countOf(db: Kysely<any>, query: RawBuilder<unknown>): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM (${query}) AS q`.execute(db)
  return Number(rows[0]!.n)
}
