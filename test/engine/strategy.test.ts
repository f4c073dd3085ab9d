import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { REBUILD_MIN_KEYS } from '../../src/engine/choose-strategy.js'
import { Matview } from '../../src/index.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'
import { customerTotals, expectCustomerTotalsInSync } from '../support/views.js'

// More customers than the least number of pending keys `auto` rebuilds for.
const CUSTOMERS = REBUILD_MIN_KEYS + 1_000

describe.each(DIALECTS)('update strategy on %s', (dialect) => {
  let mv: Matview
  const database = useTestDatabase(dialect, {
    setup: async (database) => {
      await createDemoSchema(database.db, { customers: CUSTOMERS, orders: CUSTOMERS * 3 })
      mv = await Matview.open({ database, batchSize: 200, views: [customerTotals] })
      await mv.update()
    },
    teardown: async () => {
      await mv?.close()
    },
  })

  const same = () => expectCustomerTotalsInSync(database.db)
  // A rebuild swaps a new table in: the target's oid tells which way the update went.
  const targetOid = async () =>
    (
      await sql<{ oid: number }>`SELECT 'customer_totals'::regclass::oid AS oid`.execute(
        database.db,
      )
    ).rows[0]!.oid
  const massUpdate = () =>
    sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(database.db)

  it('rebuilds after a mass update, and applies a few changes in batches', async () => {
    const before = await targetOid()
    await sql`UPDATE orders SET amount_cents = amount_cents + 7 WHERE id <= 40`.execute(database.db)
    const few = await mv.update()
    expect(few.views[0]).toMatchObject({ outcome: 'done' })
    expect(few.views[0]!.updated).toBeGreaterThan(0)
    expect(few.views[0]!.notes ?? []).not.toContainEqual(expect.stringContaining('rebuilt'))
    expect(await targetOid()).toBe(before)
    await same()

    await massUpdate()
    const mass = await mv.update()
    expect(mass.views[0]).toMatchObject({ outcome: 'done' })
    expect(mass.views[0]!.notes).toContainEqual(expect.stringMatching(/^rebuilt: .*strategy auto/))
    expect(await targetOid()).not.toBe(before)
    await same()
    // The rebuilt view keeps capturing: the next change is applied in a batch.
    await sql`UPDATE customers SET region = 'moon' WHERE id = 5`.execute(database.db)
    const after = await mv.update()
    expect(after.views[0]).toMatchObject({ outcome: 'done', updated: 1 })
    await same()
    const [status] = await mv.status()
    expect(status).toMatchObject({ state: 'ready', pending: { total: 0 } })
  })

  it('follows --strategy: incremental never rebuilds, rebuild always does', async () => {
    const before = await targetOid()
    await massUpdate()
    const incremental = await mv.update({ strategy: 'incremental' })
    expect(incremental.views[0]).toMatchObject({ outcome: 'done' })
    expect(incremental.views[0]!.updated).toBeGreaterThan(REBUILD_MIN_KEYS / 2)
    expect(await targetOid()).toBe(before)
    await same()

    await sql`UPDATE orders SET amount_cents = amount_cents + 7 WHERE id <= 5`.execute(database.db)
    const rebuild = await mv.update({ strategy: 'rebuild' })
    expect(rebuild.views[0]!.notes).toContain('rebuilt instead of applied (--strategy rebuild)')
    expect(await targetOid()).not.toBe(before)
    await same()
  })

  it('a rebuild the time budget cut short is finished by the next update', async () => {
    const { rows } = await sql<{ id: number }>`
      SELECT id FROM matview.views WHERE name = 'customer_totals'`.execute(database.db)
    const table = (name: string) => sql.id('matview', `${name}_${rows[0]!.id}`)
    const count = async (name: string) =>
      Number(
        (await sql<{ n: string }>`SELECT count(*) AS n FROM ${table(name)}`.execute(database.db))
          .rows[0]!.n,
      )
    await massUpdate()
    const cut = await mv.update({ maxBatches: 1 })
    expect(cut.views[0]).toMatchObject({ outcome: 'partial', reason: 'batch limit' })
    expect((await mv.status())[0]).toMatchObject({ state: 'rebuilding' })
    // The burst was counted where it waits, not first moved into the log the rebuild discards.
    expect(await count('inbox')).toBeGreaterThan(0)
    expect(await count('log')).toBe(0)
    // Writes meanwhile land in the rebuild's log and are in the result.
    await sql`DELETE FROM orders WHERE customer_id = 11`.execute(database.db)
    const finished = await mv.update()
    expect(finished.views[0]).toMatchObject({ outcome: 'done' })
    expect(finished.views[0]!.notes).toContain('finishing the rebuild an earlier run started')
    await same()
    expect((await mv.status())[0]).toMatchObject({ state: 'ready', pending: { total: 0 } })
  })

  it('vacuums the change log after a drain that deleted many rows', async () => {
    const { rows } = await sql<{ id: number }>`
      SELECT id FROM matview.views WHERE name = 'customer_totals'`.execute(database.db)
    const log = `matview.log_${rows[0]!.id}`
    const logStats = async () =>
      (
        await sql<{ reltuples: number }>`
          SELECT reltuples::float8 AS reltuples FROM pg_class WHERE oid = ${log}::regclass`.execute(
          database.db,
        )
      ).rows[0]!.reltuples
    // Never vacuumed nor analyzed yet.
    expect(Number(await logStats())).toBe(-1)
    await massUpdate()
    await massUpdate()
    const drained = await mv.update({ strategy: 'incremental' })
    expect(drained.views[0]).toMatchObject({ outcome: 'done' })
    // VACUUM records the (now empty) log's size.
    expect(Number(await logStats())).toBe(0)
    await same()
  })

  it('a run makes one pass over the log: a key written behind it waits for the next run', async () => {
    const { rows } = await sql<{ id: string }>`
      SELECT customer_id::text AS id FROM orders WHERE status = 'paid'
      GROUP BY customer_id ORDER BY customer_id LIMIT 6`.execute(database.db)
    const [behind, ...ahead] = rows.map((r) => Number(r.id))
    // A write made during the run, to a key the pass has gone by: a trigger on the target
    // changes an order of the first customer when the batch applies the fourth one after it.
    await sql`
      CREATE FUNCTION touch_behind() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        UPDATE orders SET amount_cents = amount_cents + 1
        WHERE id = (SELECT min(id) FROM orders WHERE customer_id = ${sql.lit(behind!)} AND status = 'paid');
        RETURN NULL;
      END $$`.execute(database.db)
    await sql`
      CREATE TRIGGER touch_behind AFTER UPDATE ON customer_totals
      FOR EACH ROW WHEN (NEW.customer_id = ${sql.lit(ahead[3]!)}) EXECUTE FUNCTION touch_behind()`.execute(
      database.db,
    )
    await sql`UPDATE orders SET amount_cents = amount_cents + 3
              WHERE customer_id = ANY(${ahead}) AND status = 'paid'`.execute(database.db)
    const first = await mv.update({ batchSize: 2, strategy: 'incremental' })
    expect(first.views[0]).toMatchObject({ outcome: 'done', updated: 5, batches: 3 })
    expect((await mv.status())[0]).toMatchObject({ pending: { total: 1 } })
    const next = await mv.update({ batchSize: 2, strategy: 'incremental' })
    expect(next.views[0]).toMatchObject({ outcome: 'done', updated: 1 })
    expect((await mv.status())[0]).toMatchObject({ pending: { total: 0 } })
    await same()
  })
})
