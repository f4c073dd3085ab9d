import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { CATALOG_VERSION } from '../../src/index.js'
import { runCli } from '../support/cli.js'
import { available, freshDatabase, type TestDatabase } from '../support/dialects.js'
import {
  expectViewsEqual,
  hashOf,
  killAfter,
  phaseOf,
  random,
  startupTime,
  strays,
  waitFor,
  writeFaultsConfig,
} from '../support/faults.js'

// SIGKILL of `matview update`/`rebuild` (the built bin, a subprocess) at random moments while
// writers keep writing, then recovery by running it again; and statement/lock timeouts inside
// a batch. PostgreSQL only: it needs several processes writing to one database at once, which
// the embedded database (one process at a time) cannot host.
//
// Bounded: MATVIEW_FAULTS_SECONDS (default 30) of kill iterations; MATVIEW_FAULTS_ITERATIONS
// sets a number instead (docs/reliability.md has the long runs). MATVIEW_FAULTS_SEED repeats a run.

const SECONDS = Number(process.env.MATVIEW_FAULTS_SECONDS ?? 30)
const ITERATIONS = process.env.MATVIEW_FAULTS_ITERATIONS
  ? Number(process.env.MATVIEW_FAULTS_ITERATIONS)
  : undefined
const SEED = Number(process.env.MATVIEW_FAULTS_SEED ?? Date.now() % 1_000_000)

/** Writers on connections of their own, each a loop of small transactions, until stopped. */
function startWriters(url: string, count: number, rand: () => number, customers: number) {
  let paused = false
  let stopped = false
  const idle: Array<() => void> = []
  const stats = { statements: 0, deadlocks: 0, errors: [] as string[] }
  const pick = (n: number) => 1 + Math.floor(rand() * n)
  const loops = Array.from({ length: count }, async () => {
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      while (!stopped) {
        if (paused) {
          await new Promise<void>((resume) => idle.push(resume))
          continue
        }
        const customer = pick(customers)
        const op = rand()
        try {
          if (op < 0.3) {
            await client.query(
              'UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = (SELECT max(id) - $1 FROM orders)',
              [pick(2000)],
            )
          } else if (op < 0.55) {
            await client.query(
              "INSERT INTO orders (customer_id, amount_cents, status) VALUES ($1, $2::bigint, CASE WHEN $2::bigint % 3 = 0 THEN 'pending' ELSE 'paid' END)",
              [customer, pick(5000)],
            )
          } else if (op < 0.7) {
            await client.query('DELETE FROM orders WHERE id = (SELECT min(id) + $1 FROM orders)', [
              pick(3000),
            ])
          } else if (op < 0.8) {
            // A customer moves region: keys of region_totals and region_summary move with it.
            await client.query('UPDATE customers SET region = $1 WHERE id = $2', [
              ['north', 'south', 'east', 'west', 'central'][pick(5) - 1],
              customer,
            ])
          } else if (op < 0.9) {
            await client.query(
              "UPDATE orders SET status = CASE status WHEN 'paid' THEN 'pending' ELSE 'paid' END WHERE customer_id = $1",
              [customer],
            )
          } else {
            // Two statements in one transaction, one of them an order moving between customers.
            await client.query('BEGIN')
            await client.query(
              'UPDATE orders SET customer_id = $1 WHERE id = (SELECT max(id) - $2 FROM orders)',
              [customer, pick(500)],
            )
            await client.query(
              'INSERT INTO orders (customer_id, amount_cents, status) VALUES ($1, 1, $2)',
              [customer, 'paid'],
            )
            await client.query('COMMIT')
          }
          stats.statements++
        } catch (error) {
          await client.query('ROLLBACK').catch(() => {})
          if ((error as { code?: string }).code === '40P01') stats.deadlocks++
          else stats.errors.push((error as Error).message)
        }
        // Let the other loops and the killed process in between statements.
        await sleep(rand() < 0.5 ? 0 : 2)
      }
    } finally {
      await client.end()
    }
  })
  return {
    stats,
    /** Waits until every writer is between transactions and holds there. */
    async pause() {
      paused = true
      while (idle.length < count) await sleep(5)
    },
    resume() {
      paused = false
      for (const go of idle.splice(0)) go()
    },
    async stop() {
      stopped = true
      this.resume()
      await Promise.all(loops)
    },
  }
}

describe('SIGKILL at random moments, on PostgreSQL', () => {
  let database: TestDatabase | undefined
  let spare: TestDatabase | undefined
  afterEach(async () => {
    await database?.close()
    await spare?.close()
    database = spare = undefined
  })

  it(
    'loses no change and leaves nothing stray, whatever moment the update, create or rebuild is killed at',
    async ({ skip }) => {
      if (!(await available('postgres'))) skip()
      const rand = random(SEED)
      database = await freshDatabase('postgres')
      const db = database.db
      const customers = 8000
      await createDemoSchema(db, { customers, orders: 150_000 })
      const dir = mkdtempSync(join(tmpdir(), 'matview-faults-'))
      let variant = 0
      writeFaultsConfig(dir, database.url!, variant)
      const cli = async (...args: string[]) => {
        const result = await runCli(args, dir)
        expect(result.code, `matview ${args.join(' ')}: ${result.stdout}${result.stderr}`).toBe(0)
        return result
      }
      const startup = await startupTime(dir)
      const tally: Record<string, number> = {}
      /** How long a whole run of each kind took last (ms), to draw kill moments from. */
      const took = { update: 2000, recreate: 2500, rebuild: 2500 }
      const writers = startWriters(database.url!, 3, rand, customers)
      const started = Date.now()
      let iterations = 0
      try {
        // A kill while the catalog is being made, the views created and backfilled: the first
        // iteration starts on a database matview has never seen.
        const more = () =>
          ITERATIONS !== undefined ? iterations < ITERATIONS : Date.now() - started < SECONDS * 1000
        while (more()) {
          iterations++
          const roll = rand()
          let args = ['update']
          let kind: keyof typeof took = 'update'
          if (iterations > 1 && roll < 0.2) {
            // Start over: the views are created and backfilled again by the killed run.
            await writers.pause()
            await cli('drop', 'region_summary', 'region_totals', 'customer_totals')
            writers.resume()
            kind = 'recreate'
          } else if (iterations > 1 && roll < 0.5) {
            variant = 1 - variant
            writeFaultsConfig(dir, database.url!, variant)
            args = ['rebuild', '--all-changed']
            kind = 'rebuild'
          }
          // Let the writers build a backlog, then kill the run somewhere in it: the delay is
          // drawn between node's start (before any statement) and as long as the last such run
          // took whole.
          await sleep(100 + rand() * 400)
          const hashBefore = await hashOf(db)
          const killed = await killAfter(args, dir, startup + rand() * (took[kind] - startup))
          await writers.pause()
          // The killed run's session ends when its server process notices.
          await waitFor(async () => {
            const { rows } = await sql<{ n: string }>`
              SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'`.execute(db)
            return Number(rows[0]!.n) === 0
          })
          let phase = killed ? await phaseOf(db) : 'finished first'
          if (phase === 'apply' && args[0] === 'rebuild')
            phase = (await hashOf(db)) === hashBefore ? 'before it began' : 'after the swap'
          tally[`${args[0]}: ${phase}`] = (tally[`${args[0]}: ${phase}`] ?? 0) + 1

          // Recovery: the same commands a cron line would run next (a deploy that changed a
          // definition runs rebuild first).
          if (phase === 'filling the shadow' || phase === 'catch-up or swap') {
            // A cron line that only runs update is told, and the other views still run.
            const refused = await runCli(['update'], dir)
            expect(refused.code).toBe(1)
            expect(refused.stdout).toMatch(
              /^customer_totals: failed.*run "matview rebuild customer_totals" to finish it/m,
            )
            expect(refused.stdout).toMatch(/^region_totals: done/m)
          }
          let began = Date.now()
          if (args[0] === 'rebuild') {
            await cli('rebuild', '--all-changed')
            if (killed) took.rebuild = Math.max(startup + 200, Date.now() - began)
            began = Date.now()
          }
          await cli('update')
          if (killed && kind !== 'rebuild') took[kind] = Math.max(startup + 200, Date.now() - began)
          await expectViewsEqual(db, variant, `iteration ${iterations} (${args[0]}, ${phase})`)
          expect(await strays(db), `iteration ${iterations}`).toEqual([])
          writers.resume()
        }
      } finally {
        await writers.stop()
      }
      expect(writers.stats.errors).toEqual([])
      expect(writers.stats.statements).toBeGreaterThan(iterations)
      // The run's record for docs/reliability.md.
      console.log(
        `faults: seed ${SEED}, ${iterations} kills in ${Math.round((Date.now() - started) / 1000)}s, ${writers.stats.statements} writer transactions (${writers.stats.deadlocks} deadlocks between writers), moments: ${JSON.stringify(tally)}`,
      )
    },
    (ITERATIONS !== undefined ? ITERATIONS * 10 : SECONDS) * 1000 + 120_000,
  )

  it('a kill while the catalog is being made leaves a catalog the next run finishes', async ({
    skip,
  }) => {
    if (!(await available('postgres'))) skip()
    const rand = random(SEED + 1)
    spare = await freshDatabase('postgres')
    const dir = mkdtempSync(join(tmpdir(), 'matview-faults-'))
    writeFileSync(join(dir, 'matview.config.mjs'), 'export default {}\n')
    const seen = new Set<number>()
    const startup = await startupTime(dir)
    for (let i = 0; i < 6; i++) {
      await sql`DROP SCHEMA IF EXISTS mv_catalog CASCADE`.execute(spare.db)
      const args = ['status', '--database', spare.url!, '--schema', 'mv_catalog']
      // Migrations start as soon as the bin has connected: kill around that moment.
      await killAfter(args, dir, startup * 0.9 + rand() * startup * 1.5)
      await waitFor(async () => {
        const { rows } = await sql<{ n: string }>`
          SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()
          AND pid <> pg_backend_pid() AND application_name = 'matview'
          AND backend_type = 'client backend' AND state <> 'idle'`.execute(spare!.db)
        return Number(rows[0]!.n) === 0
      })
      const { rows: made } = await sql<{ ok: boolean }>`
        SELECT to_regclass('mv_catalog.catalog_version') IS NOT NULL AS ok`.execute(spare!.db)
      const { rows } = made[0]!.ok
        ? await sql<{ n: string }>`SELECT count(*) AS n FROM mv_catalog.catalog_version`.execute(
            spare.db,
          )
        : { rows: [{ n: '-1' }] }
      seen.add(Number(rows[0]!.n))
      const again = await runCli(args, dir)
      expect(again.code, again.stderr).toBe(0)
      const { rows: versions } = await sql<{ version: number }>`
        SELECT version FROM mv_catalog.catalog_version ORDER BY version`.execute(spare.db)
      expect(versions.map((v) => Number(v.version))).toEqual(
        Array.from({ length: CATALOG_VERSION }, (_, k) => k + 1),
      )
    }
    console.log(`catalog kills: versions found after the kill: ${[...seen].sort().join(', ')}`)
  }, 120_000)
})

describe('a timeout inside a batch, on PostgreSQL', () => {
  let database: TestDatabase | undefined
  afterEach(async () => {
    await database?.close()
    database = undefined
  })

  /**
   * 100 keys pending on customer_totals, which another session holds in SHARE mode; `url`
   * connects with `setting` (a timeout) at 300 ms.
   */
  async function blockedTarget(setting: string) {
    database = await freshDatabase('postgres')
    const db = database.db
    await createDemoSchema(db, { customers: 200, orders: 2000 })
    const dir = mkdtempSync(join(tmpdir(), 'matview-faults-'))
    writeFaultsConfig(dir, database.url!, 0)
    expect((await runCli(['create'], dir)).code).toBe(0)
    await sql`UPDATE orders SET amount_cents = amount_cents + 7 WHERE customer_id <= 100`.execute(
      db,
    )
    const blocker = new pg.Client({ connectionString: database.url })
    await blocker.connect()
    await blocker.query('BEGIN')
    await blocker.query('LOCK TABLE customer_totals IN SHARE MODE')
    const url = new URL(database.url!)
    url.searchParams.set('options', `-c ${setting}=300`)
    return { db, dir, blocker, url }
  }

  it.each([
    { setting: 'statement_timeout', message: /canceling statement due to statement timeout/ },
    { setting: 'lock_timeout', message: /canceling statement due to lock timeout/ },
  ])(
    '$setting: the batch rolls back, the view fails with one line, and the next run applies every change',
    async ({ setting, message }) => {
      if (!(await available('postgres'))) return
      // Another session holds the target: every batch's write to it waits, then times out.
      const { db, dir, blocker, url } = await blockedTarget(setting)
      try {
        const timedOut = await runCli(['update', '--database', url.toString()], dir)
        expect(timedOut.code).toBe(1)
        const line = timedOut.stdout.split('\n').find((l) => l.startsWith('customer_totals: '))
        expect(line).toMatch(/^customer_totals: failed, \+0 ~0 -0 in 0 batches/)
        expect(line).toMatch(message)
        // The other views ran: region_totals has nothing to do with the lock.
        expect(timedOut.stdout).toMatch(/^region_totals: done/m)
      } finally {
        await blocker.query('ROLLBACK')
        await blocker.end()
      }
      const status = await runCli(['status', '--json', '--views', 'customer_totals'], dir)
      expect(JSON.parse(status.stdout)[0].pending.total).toBe(100)
      const next = await runCli(['update'], dir)
      expect(next.code, next.stdout).toBe(0)
      // All 100 keys recomputed; the 20 customers with only pending orders have no row to change.
      expect(next.stdout).toMatch(/^customer_totals: done, \+0 ~80 -0 in 3 batches/m)
      await expectViewsEqual(db, 0, setting)
    },
    60_000,
  )

  it('a lock held past lock_timeout but released soon after: the batch is tried again and the run is done', async () => {
    if (!(await available('postgres'))) return
    const { db, dir, blocker, url } = await blockedTarget('lock_timeout')
    // The first try waits 300 ms and fails; the lock is gone before the second.
    const released = new Promise((resolve) => setTimeout(resolve, 400)).then(async () => {
      await blocker.query('ROLLBACK')
      await blocker.end()
    })
    const run = await runCli(['update', '--database', url.toString()], dir)
    await released
    expect(run.code, run.stdout + run.stderr).toBe(0)
    expect(run.stdout).toMatch(/^customer_totals: done, \+0 ~80 -0/m)
    await expectViewsEqual(db, 0, 'lock released')
  }, 60_000)
})
