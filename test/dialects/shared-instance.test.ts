import { setTimeout as sleep } from 'node:timers/promises'
import type { PGlite } from '@electric-sql/pglite'
import fc from 'fast-check'
import { Kysely } from 'kysely'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { PGliteDialect } from '../../src/dialects/pglite-dialect.js'
import { defineView, Matview, sql } from '../../src/index.js'
import { DIALECTS, type DialectName, freshDatabase } from '../support/dialects.js'
import { customerTotals, expectCustomerTotalsInSync } from '../support/views.js'

// The application and matview on one database at once, as an application that hands matview
// its own PGlite instance (`database: pg`) runs them: the application's statements and
// transactions must never land inside matview's open transactions (create, backfill, rebuild,
// drop, update), whatever the interleaving. On PGlite both share its one session, so this is
// what the dialect's use of PGlite's transaction mutex guarantees; on PostgreSQL the
// application has connections of its own (sessions), and the same checks hold there too.
//
// MATVIEW_SHARED_RUNS sets the number of random interleavings per dialect (default 6).

const RUNS = Number(process.env.MATVIEW_SHARED_RUNS ?? 6)

/**
 * A view whose query divides by zero once an order of 0 cents exists (order 2000 is set so by
 * the tests): each of its backfills fails and rolls back a transaction of matview's.
 */
const ratios = defineView({
  name: 'ratios',
  key: ['customer_id'],
  query: sql`SELECT customer_id, sum(amount_cents)::bigint AS total, 100 / min(amount_cents) AS ratio
    FROM orders GROUP BY customer_id`,
  sources: { orders: { customer_id: 'customer_id' } },
})

/** The application's side: its own statements, on its own handle to the database. */
interface App {
  /** The database spec the application hands matview: its PGlite instance, or a URL. */
  spec: unknown
  /** One autocommit statement. */
  query(text: string, params?: unknown[]): Promise<void>
  /** A transaction of the application's; a throw from `body` rolls it back. */
  transaction(
    body: (query: (text: string, params?: unknown[]) => Promise<void>) => Promise<void>,
  ): Promise<void>
  count(text: string): Promise<number>
  /** A Kysely instance of the test's own, for the checks. */
  db: Kysely<any>
  close(): Promise<void>
}

let pgliteTemplate: Promise<PGlite> | undefined
const cleanup: (() => Promise<unknown>)[] = []
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()?.()
})

/** A fresh database with the demo schema and `notes` (a table matview never reads). */
async function openApp(dialect: DialectName): Promise<App> {
  if (dialect === 'pglite') {
    pgliteTemplate ??= (async () => {
      const { PGlite } = await import('@electric-sql/pglite')
      const template = await PGlite.create()
      const db = new Kysely<any>({ dialect: new PGliteDialect(template as never) })
      await createDemoSchema(db, { customers: 200, orders: 2000 })
      await template.exec('CREATE TABLE notes (id int PRIMARY KEY, tx int)')
      return template
    })()
    const instance = (await (await pgliteTemplate).clone()) as PGlite
    // The test's own Kysely for checks goes through the same instance: it waits like the
    // application does. It is never destroyed (that would close the instance early).
    const db = new Kysely<any>({ dialect: new PGliteDialect(instance as never) })
    const app: App = {
      spec: instance,
      query: async (text, params) => {
        await instance.query(text, params)
      },
      transaction: async (body) => {
        await instance.transaction(async (tx) => {
          await body(async (text, params) => {
            await tx.query(text, params)
          })
        })
      },
      count: async (text) => (await instance.query<{ n: number }>(text)).rows[0]!.n,
      db,
      close: () => instance.close(),
    }
    return app
  }
  const database = await freshDatabase('postgres')
  await createDemoSchema(database.db, { customers: 200, orders: 2000 })
  await sql`CREATE TABLE notes (id int PRIMARY KEY, tx int)`.execute(database.db)
  const pool = new pg.Pool({ connectionString: database.url, max: 4 })
  // The test database is dropped (its sessions terminated) after the pool ended: a client the
  // terminate reaches on its way out must not become an uncaught error.
  pool.on('error', () => {})
  pool.on('connect', (client) => client.on('error', () => {}))
  return {
    spec: database.url,
    query: async (text, params) => {
      await pool.query(text, params)
    },
    transaction: async (body) => {
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await body(async (text, params) => {
          await client.query(text, params)
        })
        await client.query('COMMIT')
      } catch (error) {
        await client.query('ROLLBACK')
        throw error
      } finally {
        client.release()
      }
    },
    count: async (text) => (await pool.query<{ n: number }>(text)).rows[0]!.n,
    db: database.db,
    close: async () => {
      await pool.end()
      await database.close()
    },
  }
}

/** The application's work: what it was told succeeded, and what it was refused. */
class Ledger {
  next = 0
  acked: number[] = []
  committedTx: number[] = []
  rolledBackTx: number[] = []
  refused: string[] = []

  /** An autocommit INSERT into `notes`. */
  async note(app: App): Promise<void> {
    const id = ++this.next
    try {
      await app.query('INSERT INTO notes (id) VALUES ($1)', [id])
      this.acked.push(id)
    } catch (error) {
      this.refused.push(`${(error as { code?: string }).code} ${(error as Error).message}`)
    }
  }

  /**
   * A transaction of two notes and a paid order (a source of the view: its capture runs in
   * the application's transaction), committed or rolled back as `commit` says.
   */
  async transaction(app: App, commit: boolean): Promise<void> {
    const tx = ++this.next
    const rollback = new Error('the application rolls back')
    try {
      await app.transaction(async (query) => {
        await query('INSERT INTO notes (id, tx) VALUES ($1, $1), ($2, $1)', [tx, -tx])
        await query(
          `INSERT INTO orders (customer_id, amount_cents, status) VALUES (1 + $1::int % 200, 1000000 + $1::int, 'paid')`,
          [tx],
        )
        if (!commit) throw rollback
      })
      this.committedTx.push(tx)
    } catch (error) {
      if (error === rollback) this.rolledBackTx.push(tx)
      else this.refused.push(`${(error as { code?: string }).code} ${(error as Error).message}`)
    }
  }

  /** Every acknowledged write is there, whole; nothing rolled back is; nothing was refused. */
  async check(app: App): Promise<void> {
    expect(this.refused).toEqual([])
    const present = async (ids: number[]) =>
      ids.length === 0
        ? 0
        : app.count(`SELECT count(*)::int AS n FROM notes WHERE id IN (${ids.join(',')})`)
    const orders = async (txs: number[]) =>
      txs.length === 0
        ? 0
        : app.count(
            `SELECT count(*)::int AS n FROM orders WHERE amount_cents IN (${txs.map((t) => 1000000 + t).join(',')})`,
          )
    expect(await present(this.acked)).toBe(this.acked.length)
    expect(await present(this.committedTx.flatMap((t) => [t, -t]))).toBe(
      2 * this.committedTx.length,
    )
    expect(await orders(this.committedTx)).toBe(this.committedTx.length)
    expect(await present(this.rolledBackTx.flatMap((t) => [t, -t]))).toBe(0)
    expect(await orders(this.rolledBackTx)).toBe(0)
  }
}

function outcomes(views: { view: string; outcome: string }[]): Record<string, string> {
  return Object.fromEntries(views.map((v) => [v.view, v.outcome]))
}

/** Lets other work in for `turns` turns of the event loop. */
async function yieldTurns(turns: number): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve))
}

describe.each(DIALECTS)('an application sharing the database with matview, on %s', (dialect) => {
  it('keeps every acknowledged write of the application while a backfill fails, and refuses none', async () => {
    const app = await openApp(dialect)
    cleanup.push(() => app.close())
    await app.query(`UPDATE orders SET amount_cents = 0 WHERE id = 2000`)
    const mv = await Matview.open({ database: app.spec as never, views: [ratios], batchSize: 5 })
    cleanup.push(() => mv.close())
    const ledger = new Ledger()
    let failed = 0
    for (let round = 0; round < 5; round++) {
      let done = false
      const run = mv.update().finally(() => {
        done = true
      })
      while (!done) await Promise.all([ledger.note(app), ledger.note(app), ledger.note(app)])
      const result = await run
      if (result.views[0]!.outcome === 'failed') failed++
    }
    expect(failed).toBe(5)
    expect(ledger.acked.length).toBeGreaterThan(0)
    await ledger.check(app)
  }, 120_000)

  it(
    'never runs an application statement or transaction inside matview’s transactions, under random interleavings of create, backfill, update, rebuild and drop',
    async () => {
      const op = fc.constantFrom('update', 'rebuild', 'drop' as const)
      const action = fc.record({
        kind: fc.constantFrom('note', 'commit', 'rollback' as const),
        // Mostly none: a request with a statement always waiting meets every gap.
        turns: fc.constantFrom(0, 0, 0, 0, 1, 2, 6),
      })
      const scenario = fc.record({
        ops: fc.array(op, { minLength: 1, maxLength: 4 }),
        // Three application "requests" at once, each a sequence of statements and transactions.
        requests: fc.array(fc.array(action, { minLength: 5, maxLength: 40 }), {
          minLength: 3,
          maxLength: 3,
        }),
        batchSize: fc.integer({ min: 3, max: 20 }),
      })
      await fc.assert(
        fc.asyncProperty(scenario, async ({ ops, requests, batchSize }) => {
          const app = await openApp(dialect)
          try {
            await app.query(`UPDATE orders SET amount_cents = 0 WHERE id = 2000`)
            const mv = await Matview.open({
              database: app.spec as never,
              views: [customerTotals, ratios],
              batchSize,
            })
            try {
              const ledger = new Ledger()
              let matviewDone = false
              const matview = (async () => {
                // An update creates and backfills the view, first and after a drop.
                let exists = false
                for (const step of ['update', ...ops]) {
                  if (step === 'drop') {
                    if (exists) await mv.drop(['customer_totals'])
                    exists = false
                    continue
                  }
                  if (step === 'update' || !exists) {
                    const { views } = await mv.update()
                    expect(outcomes(views)).toEqual({ customer_totals: 'done', ratios: 'failed' })
                    exists = true
                  }
                  if (step === 'rebuild') {
                    const { views } = await mv.rebuild(['customer_totals'])
                    expect(outcomes(views)).toEqual({ customer_totals: 'done' })
                  }
                }
              })().finally(() => {
                matviewDone = true
              })
              const request = async (actions: { kind: string; turns: number }[]) => {
                // Keeps going until matview is done, so its whole sequence meets the application.
                for (let i = 0; i < actions.length || !matviewDone; i++) {
                  const { kind, turns } = actions[i % actions.length]!
                  await yieldTurns(turns)
                  if (kind === 'note') await ledger.note(app)
                  else await ledger.transaction(app, kind === 'commit')
                  if (i > 400) break
                }
              }
              // Settled all, so a failure does not leave requests running on a closed database.
              const settled = await Promise.allSettled([matview, ...requests.map(request)])
              for (const outcome of settled) if (outcome.status === 'rejected') throw outcome.reason
              await ledger.check(app)
              // And the view, re-created where the last step dropped it, equals its query.
              await mv.update()
              await expectCustomerTotalsInSync(app.db)
            } finally {
              await mv.close()
            }
          } finally {
            await app.close()
          }
        }),
        // No shrinking: each run opens a database; the seed and path printed repeat a failure.
        { numRuns: RUNS, endOnFailure: true },
      )
    },
    60_000 + RUNS * 40_000,
  )

  it('runs the in-process worker beside the application’s transactions, keeping them whole and the view fresh', async () => {
    const app = await openApp(dialect)
    cleanup.push(() => app.close())
    await app.query(`UPDATE orders SET amount_cents = 0 WHERE id = 2000`)
    const mv = await Matview.open({
      database: app.spec as never,
      views: [customerTotals, ratios],
      batchSize: 10,
    })
    cleanup.push(() => mv.close())
    const controller = new AbortController()
    const failures = new Map<string, number>()
    const worker = mv.worker({
      signal: controller.signal,
      pollMs: 200,
      graceMs: 5000,
      logger: { debug() {}, info() {}, warn() {}, error() {} },
      onRun: (result) => {
        if (result.outcome === 'failed')
          failures.set(result.view, (failures.get(result.view) ?? 0) + 1)
      },
    })
    cleanup.push(async () => {
      controller.abort()
      await worker
    })
    const ledger = new Ledger()
    const turns = fc.sample(fc.constantFrom(0, 0, 0, 1, 3), { numRuns: 150, seed: 42 })
    const started = Date.now()
    // Three requests, until the worker has retried the failing view a few times (its
    // transactions rolled back beside the application's), at least 150 actions in all.
    await Promise.all(
      [0, 1, 2].map(async (request) => {
        for (let i = request; ; i += 3) {
          const enough = i >= turns.length && (failures.get('ratios') ?? 0) >= 3
          if (enough || Date.now() - started > 60_000) break
          await yieldTurns(turns[i % turns.length]!)
          // Two requests write bursts of autocommit notes (statements already waiting when a
          // transaction of matview's begins), the third transactions.
          if (request < 2) await Promise.all([ledger.note(app), ledger.note(app), ledger.note(app)])
          else await ledger.transaction(app, i % 5 !== 2)
        }
      }),
    )
    await ledger.check(app)
    expect(failures.get('ratios')).toBeGreaterThanOrEqual(3)
    // The worker catches up with every committed order.
    const waited = Date.now()
    for (;;) {
      try {
        await expectCustomerTotalsInSync(app.db)
        break
      } catch (error) {
        if (Date.now() - waited > 60_000) throw error
        await sleep(200)
      }
    }
    controller.abort()
    await worker
    // Only the failing view failed.
    expect([...failures.keys()]).toEqual(['ratios'])
  }, 180_000)
})
