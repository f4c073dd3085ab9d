import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { claimKeys } from '../../src/engine/apply-batch.js'
import { KeyError } from '../../src/engine/key-error.js'
import { isDataError, setAsideKey } from '../../src/engine/set-aside.js'
import { loadViewRuntime, partitionRuntime } from '../../src/engine/view-runtime.js'
import { type Kysely, Matview, sql } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'
import {
  customerTotals,
  expectCustomerTotalsInSync,
  POISONED_QUERY,
  poisonedView,
} from '../support/views.js'

// Failure isolation (the worker's, after repeated failures) sets a key aside only for an error
// its own rows cause, and only when other keys of the batch were applied: audit finding 11.

const pgError = (code: string) => Object.assign(new Error(`error ${code}`), { code })

describe('isDataError', () => {
  it.each([
    ['22012', 'division by zero'],
    ['22P02', 'invalid text representation (a bad cast)'],
    ['23505', 'unique violation'],
    ['23514', 'check violation'],
    ['21000', 'a scalar subquery returned more than one row'],
    ['P0001', 'RAISE EXCEPTION'],
    ['P0004', 'ASSERT failure'],
  ])('%s (%s) is the data of the keys', (code) => {
    expect(isDataError(pgError(code))).toBe(true)
    // As the batch wraps it: a ViewRunError whose cause is the driver's error.
    expect(isDataError(new Error('applying a batch failed', { cause: pgError(code) }))).toBe(true)
  })

  it.each([
    ['55P03', 'lock timeout'],
    ['57014', 'statement timeout or cancelled query'],
    ['57P01', 'admin shutdown'],
    ['42703', 'undefined column'],
    ['42P01', 'undefined table'],
    ['42501', 'insufficient privilege'],
    ['08006', 'connection failure'],
    ['40001', 'serialization failure'],
    ['40P01', 'deadlock'],
    ['25P02', 'in failed transaction'],
    ['53100', 'disk full'],
    ['XX000', 'internal error'],
  ])('%s (%s) says nothing about the keys', (code) => {
    expect(isDataError(pgError(code))).toBe(false)
  })

  it('a duplicate or NULL key the query returns is the data of the keys; an error without a code is not', () => {
    expect(isDataError(new KeyError('v', 'duplicate key'))).toBe(true)
    expect(isDataError(new Error('Connection terminated unexpectedly'))).toBe(false)
  })
})

async function setAsideCount(db: Kysely<any>): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM matview.set_aside`.execute(db)
  return Number(rows[0]!.n)
}

describe.each(DIALECTS)('failure isolation on %s', (dialect) => {
  const database = useTestDatabase(dialect, {
    setup: (database) => createDemoSchema(database.db, { customers: 30, orders: 200 }),
  })

  it('a column renamed away fails the run and sets no key aside; renamed back, the next run applies every key', async () => {
    const mv = await Matview.open({ database, views: [customerTotals], batchSize: 8 })
    try {
      await mv.update()
      await sql`UPDATE orders SET amount_cents = amount_cents + 3`.execute(database.db)
      await sql`ALTER TABLE orders RENAME COLUMN amount_cents TO amount_renamed`.execute(
        database.db,
      )
      const run = await mv.update({ isolateFailures: true })
      expect(run.views[0]).toMatchObject({ outcome: 'failed' })
      expect(run.views[0]!.error).toMatch(/amount_cents/)
      expect(await setAsideCount(database.db)).toBe(0)
      await sql`ALTER TABLE orders RENAME COLUMN amount_renamed TO amount_cents`.execute(
        database.db,
      )
      expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
      await expectCustomerTotalsInSync(database.db)
    } finally {
      await mv.close()
    }
  })

  it('a data error on every key of the batch sets none aside: the failure says nothing about one key', async () => {
    const mv = await Matview.open({ database, views: [customerTotals], batchSize: 8 })
    try {
      await mv.update()
      // Every pending key's row now breaks the target's constraint: not one key's fault.
      // (Customers 2 to 5 all have paid orders, so each has a row to write.)
      await sql`ALTER TABLE customer_totals ADD CONSTRAINT small CHECK (total_cents < 0) NOT VALID`.execute(
        database.db,
      )
      await sql`UPDATE orders SET amount_cents = amount_cents + 3 WHERE customer_id BETWEEN 2 AND 5`.execute(
        database.db,
      )
      const run = await mv.update({ isolateFailures: true })
      expect(run.views[0]).toMatchObject({ outcome: 'failed' })
      expect(await setAsideCount(database.db)).toBe(0)
      await sql`ALTER TABLE customer_totals DROP CONSTRAINT small`.execute(database.db)
      expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
      await expectCustomerTotalsInSync(database.db)
    } finally {
      await mv.close()
    }
  })

  it.skipIf(dialect !== 'postgres')(
    'a lock_timeout on the target sets no key aside (PostgreSQL only: PGlite has one session, so nothing else can hold the lock)',
    async () => {
      const url = new URL(database.url!)
      url.searchParams.set('options', '-c lock_timeout=300')
      const mv = await Matview.open({
        database: url.toString(),
        views: [customerTotals],
        batchSize: 8,
      })
      const blocker = new pg.Client({ connectionString: database.url })
      try {
        await mv.update()
        await sql`UPDATE orders SET amount_cents = amount_cents + 3`.execute(database.db)
        await blocker.connect()
        await blocker.query('BEGIN')
        await blocker.query('LOCK TABLE customer_totals IN SHARE MODE')
        const run = await mv.update({ isolateFailures: true })
        expect(run.views[0]).toMatchObject({ outcome: 'failed' })
        expect(run.views[0]!.error).toMatch(/lock timeout/)
        await blocker.query('ROLLBACK')
        expect(await setAsideCount(database.db)).toBe(0)
        expect((await mv.update()).views[0]).toMatchObject({ outcome: 'done' })
        await expectCustomerTotalsInSync(database.db)
      } finally {
        await blocker.end().catch(() => {})
        await mv.close()
      }
    },
    60_000,
  )

  it('a key about to be set aside on a partitioned view, for which another runner has just moved a new write, is tried once more and applied, not set aside', async () => {
    // The query raises for an order of 7 cents (division by zero).
    const query = POISONED_QUERY
    const poisoned = poisonedView(2)
    const mv = await Matview.open({ database, views: [poisoned], batchSize: 8 })
    try {
      await mv.update()
      const runtime = (await loadViewRuntime(database.db, 'matview', poisoned))!
      // Runner A's batch: customer 5's new order poisons it; its attempts fail.
      await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (5, 7, 'paid')`.execute(
        database.db,
      )
      await claimKeys(database.db, runtime, 8, undefined)
      // Meanwhile the row is fixed, and runner B (on another partition) moves the whole inbox:
      // the fixing write's key lands in A's partition after A's last failed attempt.
      await sql`UPDATE orders SET amount_cents = 8 WHERE amount_cents = 7`.execute(database.db)
      await claimKeys(database.db, partitionRuntime(runtime, 0), 8, undefined)
      // A now sets the key aside, from its partition: the fixed row applies instead.
      let outcome: { setAside: boolean } | undefined
      for (const k of [0, 1]) {
        const part = partitionRuntime(runtime, k)
        const { rows: here } = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM ${sql.id(part.objects.log.schema, part.objects.log.table)}
          WHERE customer_id = 5`.execute(database.db)
        if (Number(here[0]!.n) > 0)
          outcome = await setAsideKey(database.db, 'matview', part, ['5'], 'division by zero')
      }
      expect(outcome).toMatchObject({ setAside: false })
      expect(await setAsideCount(database.db)).toBe(0)
      expect(await queryDifferences(database.db, 'poisoned', query, ['customer_id', 'x'])).toEqual({
        extra: [],
        missing: [],
      })
    } finally {
      await mv.close()
    }
  })
})
