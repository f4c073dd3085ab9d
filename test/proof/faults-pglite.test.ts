import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { connect } from '../../src/dialects/connect.js'
import { runCli } from '../support/cli.js'
import {
  expectViewsEqual,
  hashOf,
  killAfter,
  phaseOf,
  random,
  startupTime,
  strays,
  writeFaultsConfig,
} from '../support/faults.js'

// SIGKILL of `matview update`/`rebuild`/`create` (the built bin) at random moments on an
// embedded database (`pglite:PATH`), then reopening it: it opens, no acknowledged write is
// lost (the application's, and the views of a run that finished before its kill), and every
// view equals its query after the next update, with nothing stray. The PostgreSQL tier is
// faults.test.ts; there writers run during the kill, here they cannot (one process at a time
// on the directory), so the writes land between runs, as the backlog the killed run works on.
//
// What this proves is a killed process, not an OS crash: PGlite writes without fsync (README,
// "The embedded database").
//
// Bounded: MATVIEW_PGLITE_KILLS rounds (default 3); MATVIEW_FAULTS_SEED repeats a run.

const ROUNDS = Number(process.env.MATVIEW_PGLITE_KILLS ?? 3)
const SEED = Number(process.env.MATVIEW_FAULTS_SEED ?? Date.now() % 1_000_000)
const CUSTOMERS = 1500

/** Opens the directory in this process (the bin must not be running), runs `fn`, closes. */
async function withDatabase<T>(path: string, fn: (db: Kysely<any>) => Promise<T>): Promise<T> {
  const database = await connect(`pglite:${path}`)
  try {
    return await fn(database.db)
  } finally {
    await database.close()
  }
}

/**
 * Writes as an application would, each its own transaction, recorded in `app.acks` with it: a
 * transaction that returned is acknowledged, and its ack row must survive any later kill.
 */
async function write(db: Kysely<any>, rand: () => number, count: number, acked: { n: number }) {
  const pick = (n: number) => 1 + Math.floor(rand() * n)
  for (let i = 0; i < count; i++) {
    const op = rand()
    const customer = pick(CUSTOMERS)
    await db.transaction().execute(async (trx) => {
      if (op < 0.35) {
        await sql`INSERT INTO orders (customer_id, amount_cents, status)
          VALUES (${customer}, ${pick(5000)}, ${op < 0.1 ? 'pending' : 'paid'})`.execute(trx)
      } else if (op < 0.6) {
        await sql`UPDATE orders SET amount_cents = amount_cents + 1
          WHERE id = (SELECT max(id) - ${pick(2000)} FROM orders)`.execute(trx)
      } else if (op < 0.75) {
        await sql`DELETE FROM orders WHERE id = (SELECT min(id) + ${pick(3000)} FROM orders)`.execute(
          trx,
        )
      } else if (op < 0.85) {
        const region = ['north', 'south', 'east', 'west', 'central'][pick(5) - 1]
        await sql`UPDATE customers SET region = ${region} WHERE id = ${customer}`.execute(trx)
      } else {
        await sql`UPDATE orders SET status = CASE status WHEN 'paid' THEN 'pending' ELSE 'paid' END
          WHERE customer_id = ${customer}`.execute(trx)
      }
      await sql`INSERT INTO app.acks DEFAULT VALUES`.execute(trx)
    })
    acked.n++
  }
}

async function ackCount(db: Kysely<any>): Promise<number> {
  const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM app.acks`.execute(db)
  return rows[0]!.n
}

describe('SIGKILL at random moments, on the embedded database', () => {
  it(
    'reopens, loses no acknowledged write, and converges, whatever moment the update, create or rebuild is killed at',
    async () => {
      const rand = random(SEED)
      const dir = mkdtempSync(join(tmpdir(), 'matview-faults-pglite-'))
      const path = join(dir, 'db')
      let variant = 0
      writeFaultsConfig(dir, 'pglite:db', variant)
      const cli = async (...args: string[]) => {
        const result = await runCli(args, dir)
        expect(result.code, `matview ${args.join(' ')}: ${result.stdout}${result.stderr}`).toBe(0)
        return result
      }
      const acked = { n: 0 }
      let hashBefore = await withDatabase(path, async (db) => {
        await createDemoSchema(db, { customers: CUSTOMERS, orders: 10_000 })
        await sql`CREATE SCHEMA app`.execute(db)
        // Out of the schemas strays() looks at.
        await sql`CREATE TABLE app.acks (id serial PRIMARY KEY)`.execute(db)
        await write(db, rand, 150, acked)
        return hashOf(db)
      })
      const startup = await startupTime(dir)
      // How long a whole run of each kind took last (ms), to draw kill moments from; the first
      // round creates the catalog and the views, and backfills them.
      const took = { update: 4000, recreate: 6000, rebuild: 6000 }
      const tally: Record<string, number> = {}
      for (let round = 1; round <= ROUNDS; round++) {
        const roll = rand()
        let args = ['update']
        let kind: keyof typeof took = round === 1 ? 'recreate' : 'update'
        if (round > 1 && roll < 0.3) {
          await cli('drop', 'region_summary', 'region_totals', 'customer_totals')
          kind = 'recreate'
        } else if (round > 1 && roll < 0.65) {
          variant = 1 - variant
          writeFaultsConfig(dir, 'pglite:db', variant)
          args = ['rebuild', '--all-changed']
          kind = 'rebuild'
        }
        // Killed between node's start (opening the directory is part of it) and as long as a
        // whole run of this kind took.
        const killed = await killAfter(
          args,
          dir,
          startup * 0.5 + rand() * (took[kind] - startup * 0.5),
        )
        let phase = 'finished first'
        await withDatabase(path, async (db) => {
          // It opens (the lock names a dead process), and every acknowledged write is there.
          expect(await ackCount(db), `round ${round}`).toBe(acked.n)
          if (!killed) {
            // The run returned before the kill: what it reported done is there too.
            if (args[0] === 'update')
              await expectViewsEqual(db, variant, `round ${round} (finished)`)
            return
          }
          phase = await phaseOf(db)
          if (phase === 'apply' && args[0] === 'rebuild')
            phase = (await hashOf(db)) === hashBefore ? 'before it began' : 'after the swap'
        })
        tally[`${args[0]}: ${phase}`] = (tally[`${args[0]}: ${phase}`] ?? 0) + 1
        // Recovery: what a cron line runs next (a deploy that changed a definition rebuilds).
        let began = Date.now()
        if (args[0] === 'rebuild') {
          await cli('rebuild', '--all-changed')
          if (killed) took.rebuild = Math.max(startup + 200, Date.now() - began)
          began = Date.now()
        }
        await cli('update')
        if (killed && kind !== 'rebuild') took[kind] = Math.max(startup + 200, Date.now() - began)
        hashBefore = await withDatabase(path, async (db) => {
          expect(await ackCount(db)).toBe(acked.n)
          await expectViewsEqual(db, variant, `round ${round} (${args[0]}, ${phase})`)
          expect(await strays(db), `round ${round}`).toEqual([])
          // The backlog of the next round's run.
          await write(db, rand, 150, acked)
          return hashOf(db)
        })
      }
      console.log(
        `faults on PGlite: seed ${SEED}, ${ROUNDS} rounds, moments: ${JSON.stringify(tally)}`,
      )
    },
    120_000 + ROUNDS * 60_000,
  )
})
