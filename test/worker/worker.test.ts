import { setTimeout as sleep } from 'node:timers/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import {
  checkProblem,
  defineHandwrittenView,
  defineView,
  type Kysely,
  Matview,
  sql,
  type ViewDefinition,
  type ViewResult,
} from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import type { WorkerOptions, WorkerSummary } from '../../src/worker/worker.js'
import {
  DIALECTS,
  type DialectName,
  freshDatabase,
  type TestDatabase,
} from '../support/dialects.js'
import { customerTotals, POISONED_QUERY, poisonedView } from '../support/views.js'

// The worker in this process (`Matview.worker`), on both databases: PGlite delivers NOTIFY to
// listen() callbacks in-process, so change-driven updates work there too. The tests that need
// several processes are in worker-processes.test.ts.

let cleanup: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn()
  cleanup = []
})

async function open(dialect: DialectName, views: ViewDefinition[], strip?: 'listen') {
  const database = await freshDatabase(dialect)
  cleanup.push(() => database.close())
  await createDemoSchema(database.db, { customers: 50, orders: 300 })
  // Without `listen` the worker has only its poll, as with an application's own Kysely instance.
  const spec: TestDatabase = strip ? { ...database, listen: undefined } : database
  const mv = await Matview.open({ database: spec, views, batchSize: 100 })
  cleanup.push(() => mv.close())
  return { mv, db: database.db }
}

/** Starts a worker; `stop()` aborts it and returns its summary. */
function start(mv: Matview, options: WorkerOptions = {}) {
  const controller = new AbortController()
  const results: ViewResult[] = []
  const warnings: string[] = []
  const done = mv.worker({
    graceMs: 5000,
    logger: { debug() {}, info() {}, warn: (m) => warnings.push(m), error() {} },
    ...options,
    signal: controller.signal,
    onRun: (r) => results.push(r),
  })
  let stopped: Promise<WorkerSummary> | undefined
  const stop = () => {
    controller.abort()
    stopped ??= done
    return stopped
  }
  cleanup.push(async () => {
    await stop()
  })
  return { results, warnings, stop, done }
}

/** How long a condition may take on a loaded machine: generous, the tests wait on conditions. */
const WAIT = 30_000

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now()
  while (Date.now() - started < timeoutMs) {
    if (await check()) return Date.now() - started
    await sleep(50)
  }
  throw new Error(`not true within ${timeoutMs}ms`)
}

async function isFresh(db: Kysely<any>): Promise<boolean> {
  const diff = await queryDifferences(db, 'customer_totals', customerTotalsQuery, [
    'customer_id',
    'region',
    'order_count',
    'total_cents',
  ])
  return diff.extra.length === 0 && diff.missing.length === 0
}

async function totalOf(db: Kysely<any>, customer: number): Promise<number | undefined> {
  const { rows } = await sql<{
    total_cents: string
  }>`SELECT total_cents FROM customer_totals WHERE customer_id = ${customer}`.execute(db)
  return rows[0] ? Number(rows[0].total_cents) : undefined
}

describe.each(DIALECTS)('worker on %s', (dialect) => {
  it('applies a write within a couple of seconds by notification (the poll is a minute)', async () => {
    const { mv, db } = await open(dialect, [customerTotals])
    const worker = start(mv, { pollMs: 60_000 })
    // The first run creates and backfills the view; then the check after it (150 ms) passes.
    await until(async () => worker.results.some((r) => r.outcome === 'done'), WAIT)
    await sleep(500)
    expect(worker.warnings).toEqual([])
    const before = (await totalOf(db, 7)) ?? 0
    await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (7, 12345, 'paid')`.execute(
      db,
    )
    // The poll is a minute away: a write applied before it came by notification.
    await until(async () => (await totalOf(db, 7)) === before + 12345, WAIT)
    // A burst in one session: the notify is throttled per session, the follow-up check
    // catches the writes whose notify was skipped.
    for (let i = 0; i < 5; i++)
      await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (8, 1, 'paid')`.execute(
        db,
      )
    await until(() => isFresh(db), WAIT)
    const summary = await worker.stop()
    expect(summary.failures).toBe(0)
  })

  it('finishes a rebuild a stopped run left half-way, and applies the writes made meanwhile, without a new notification', async () => {
    const { mv, db } = await open(dialect, [customerTotals])
    await mv.update()
    // The rebuild stops after its first batch (the fill): the view is left `rebuilding`.
    const partial = await mv.rebuild(['customer_totals'], { maxBatches: 1 })
    expect(partial.views[0]).toMatchObject({ outcome: 'partial' })
    expect((await mv.status())[0]).toMatchObject({ state: 'rebuilding' })
    // Written while no worker listens: its notification is gone for good.
    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id = 5`.execute(db)
    const worker = start(mv, { pollMs: 300 })
    // The run's result is recorded when it ends, after the swap made the view ready.
    await until(
      async () =>
        worker.results.length > 0 &&
        (await mv.status())[0]!.state === 'ready' &&
        (await isFresh(db)),
      WAIT,
    )
    expect(worker.results[0]!.notes).toContain('finishing the rebuild an earlier run started')
    expect((await worker.stop()).failures).toBe(0)
  })

  it('applies a write by polling when it cannot LISTEN', async () => {
    const { mv, db } = await open(dialect, [customerTotals], 'listen')
    const worker = start(mv, { pollMs: 300 })
    await until(async () => worker.results.some((r) => r.outcome === 'done'), WAIT)
    await sql`UPDATE orders SET status = 'pending' WHERE customer_id = 3`.execute(db)
    await until(() => isFresh(db), WAIT)
    expect(await isFresh(db)).toBe(true)
  })

  it('gives the notification to capture functions created before it existed', async () => {
    const { mv, db } = await open(dialect, [customerTotals])
    await mv.update()
    // Make the capture functions what matview 0.1 created: no notify.
    const { rows } = await sql<{ name: string; body: string }>`
      SELECT proname AS name, prosrc AS body FROM pg_proc
      WHERE pronamespace = 'matview'::regnamespace AND proname LIKE 'capture\\_%'`.execute(db)
    expect(rows.length).toBe(2)
    const created = new Map(rows.map((r) => [r.name, r.body]))
    for (const row of rows) {
      // 0.1's body is today's without the notify line.
      const old = row.body.replace(
        /\n {2}IF pg_catalog\.date_part\('epoch'[\s\S]*?END IF;(?=\n {2}RETURN NULL;)/,
        '',
      )
      expect(old).not.toContain('pg_notify')
      expect(old).toMatch(/END IF;\n {2}RETURN NULL;\nEND$/)
      await sql`CREATE OR REPLACE FUNCTION ${sql.id('matview', row.name)}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(old)}`.execute(db)
    }
    const worker = start(mv, { pollMs: 60_000 })
    await sleep(300)
    expect(worker.warnings).toEqual([])
    await until(async () => {
      const { rows } = await sql<{ n: number }>`
        SELECT count(*)::int AS n FROM pg_proc
        WHERE pronamespace = 'matview'::regnamespace AND proname LIKE 'capture\\_%'
          AND prosrc LIKE '%pg_notify%'`.execute(db)
      return rows[0]!.n === 2
    }, WAIT)
    // Upgraded to the very text a view created today has (what `matview sql`'s check compares).
    const { rows: upgraded } = await sql<{ name: string; body: string }>`
      SELECT proname AS name, prosrc AS body FROM pg_proc
      WHERE pronamespace = 'matview'::regnamespace AND proname LIKE 'capture\\_%'`.execute(db)
    for (const row of upgraded) expect(row.body).toBe(created.get(row.name))
    await sql`UPDATE customers SET region = 'mars' WHERE id = 5`.execute(db)
    await until(() => isFresh(db), WAIT)
    await worker.stop()
  })

  it('retries a failing view with backoff while another stays fresh, and records the error', async () => {
    let attempts = 0
    const broken = defineHandwrittenView({
      name: 'broken',
      onChange: true,
      needsInsert: () => 1,
      doInsert: () => {
        attempts++
        throw new Error('the hook is broken')
      },
    })
    const { mv, db } = await open(dialect, [customerTotals, broken])
    const startedAt = Date.now()
    const worker = start(mv, { pollMs: 200 })
    await until(async () => worker.results.some((r) => r.view === 'customer_totals'), WAIT)
    // Writes keep coming until the broken view failed twice; each is applied meanwhile.
    for (let i = 1; attempts < 2 || i <= 5; i++) {
      await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (${i}, 100, 'paid')`.execute(
        db,
      )
      await until(() => isFresh(db), WAIT)
      await sleep(200)
    }
    await worker.stop()
    const elapsed = Date.now() - startedAt
    // Run at every 200 ms poll it would fail elapsed/200 times; with backoff (1 s, 2 s, 4 s…,
    // each half to all of that) the n-th retry comes at least 0.5 + 1 + … + 2^(n-2) s after
    // the first failure. A slow machine only makes fewer attempts in the time measured.
    let allowed = 1
    for (let wait = 500; wait <= elapsed; wait += 500 * 2 ** (allowed - 1)) allowed++
    expect(attempts).toBeGreaterThanOrEqual(2)
    expect(attempts).toBeLessThanOrEqual(allowed)
    const status = await mv.status({ views: ['broken'] })
    expect(status[0]!.lastRun).toMatchObject({ outcome: 'failed' })
    expect(status[0]!.lastRun!.error).toContain('the hook is broken')
    expect(checkProblem(status[0]!)).toBe('last run failed')
  })

  it('sets a poison key aside after repeated failures, so the rest proceeds; retry puts it back', async () => {
    // The query raises for one order's row (division by zero), so every batch with its
    // customer fails.
    const query = POISONED_QUERY
    const poisoned = poisonedView()
    const { mv, db } = await open(dialect, [poisoned])
    const fresh = async () => {
      const diff = await queryDifferences(db, 'poisoned', query, ['customer_id', 'x'])
      return diff.extra.length === 0 && diff.missing.length === 0
    }
    const worker = start(mv, { pollMs: 200, isolateAfter: 2 })
    await until(async () => worker.results.some((r) => r.outcome === 'done'), WAIT)
    await sql`INSERT INTO orders (customer_id, amount_cents, status)
              VALUES (5, 7, 'paid'), (6, 100, 'paid'), (9, 100, 'paid')`.execute(db)
    // Fails twice (at once, then after 0.5-1 s of backoff), then isolates after 1-2 s more.
    const isolated = (r: ViewResult) => r.notes?.some((n) => n.startsWith('set aside')) === true
    await until(async () => worker.results.some(isolated), WAIT)
    const failures = worker.results.filter((r) => r.outcome === 'failed').length
    expect(failures).toBe(2)
    const last = worker.results.at(-1)!
    expect(last).toMatchObject({ outcome: 'done', notes: ['set aside (customer_id)=(5)'] })
    expect((await mv.status())[0]!.setAside).toBe(1)
    // Everything but customer 5 is applied; customer 5 cannot be (its query raises).
    const { rows } = await sql<{ customer_id: string }>`
      SELECT customer_id FROM poisoned WHERE customer_id IN (6, 9) ORDER BY 1`.execute(db)
    expect(rows.map((r) => Number(r.customer_id))).toEqual([6, 9])
    const [status] = await mv.status()
    expect(status!.pending!.total).toBe(0)
    expect(checkProblem(status!)).toBe('1 key set aside')
    // Fixed data, then retry: the key goes back in the log and the worker applies it.
    await worker.stop()
    await sql`UPDATE orders SET amount_cents = 8 WHERE amount_cents = 7`.execute(db)
    expect(await mv.retry(['poisoned'])).toEqual([{ view: 'poisoned', keys: 1 }])
    expect((await mv.status())[0]!.setAside).toBe(0)
    await mv.update()
    expect(await fresh()).toBe(true)
  })

  it('runs a hand-written view without a schedule once per poll, not again 150 ms after each run', async () => {
    let checks = 0
    const polled = defineHandwrittenView({
      name: 'polled',
      needsInsert: () => {
        checks++
        return 0
      },
      doInsert: () => 0,
    })
    const { mv } = await open(dialect, [customerTotals, polled])
    // A long poll: after its run at start the view is due again only a minute later.
    const worker = start(mv, { pollMs: 60_000 })
    await until(
      async () => worker.results.filter((r) => r.view === 'customer_totals').length >= 1,
      WAIT,
    )
    await until(async () => worker.results.some((r) => r.view === 'polled'), WAIT)
    // The declarative view's look-again (150 ms after its run) has come and gone many times over.
    await sleep(1500)
    await worker.stop()
    // Before the fix it ran every ~160 ms: 10 runs and more in this time.
    expect(worker.results.filter((r) => r.view === 'polled').length).toBe(1)
    expect(checks).toBe(1)
  })

  it('keeps one history row per idle stretch, not one per run that found nothing to do', async () => {
    let waiting = 0
    const periodic = defineHandwrittenView({
      name: 'periodic',
      every: '100ms',
      needsInsert: () => waiting,
      doInsert: () => {
        waiting--
        return 1
      },
    })
    const { mv } = await open(dialect, [periodic])
    const worker = start(mv, { pollMs: 60_000 })
    const runs = () => worker.results.filter((r) => r.view === 'periodic').length
    await until(async () => runs() >= 5, WAIT)
    waiting = 1
    await until(async () => worker.results.some((r) => r.inserted === 1), WAIT)
    const after = runs()
    await until(async () => runs() >= after + 5, WAIT)
    await worker.stop()
    expect(worker.results.every((r) => r.outcome === 'done')).toBe(true)
    // Newest first: the idle stretch after the write, the run that applied it, the first stretch.
    const history = await mv.history('periodic', 100)
    expect(history.map((r) => [r.outcome, r.inserted, r.batches])).toEqual([
      ['done', 0, 0],
      ['done', 1, 1],
      ['done', 0, 0],
    ])
    // A stretch row ends at its last check.
    for (const row of [history[0]!, history[2]!])
      expect(row.finishedAt!.getTime()).toBeGreaterThan(row.startedAt.getTime())
  })

  it('runs a view on its schedule and another at its interval', async () => {
    let scheduled = 0
    let periodic = 0
    const counting = (name: string, count: () => void, timing: object) =>
      defineHandwrittenView({
        name,
        ...timing,
        needsInsert: () => 0,
        doInsert: () => 0,
        needsDelete: () => {
          count()
          return 0
        },
        doDelete: () => 0,
      })
    const { mv } = await open(dialect, [
      // Six fields: the first is seconds, so it fires every second.
      counting('every_second', () => scheduled++, { schedule: '* * * * * *' }),
      counting('every_300ms', () => periodic++, { every: '300ms' }),
    ])
    const started = Date.now()
    const worker = start(mv, { pollMs: 60_000 })
    await until(async () => scheduled >= 3 && periodic >= 6, WAIT)
    await worker.stop()
    const elapsed = Date.now() - started
    // At start, then on each second; at start, then every 300 ms after a run ends. Never more
    // often (a loaded machine only runs them less often than that).
    expect(scheduled).toBeLessThanOrEqual(2 + Math.floor(elapsed / 1000))
    expect(periodic).toBeLessThanOrEqual(1 + Math.floor(elapsed / 300))
  })

  it('registers while it runs, heartbeats, and deregisters when stopped', async () => {
    const { mv, db } = await open(dialect, [customerTotals])
    const worker = start(mv, { pollMs: 200, heartbeatMs: 200 })
    await until(async () => (await mv.workers()).length === 1, WAIT)
    const [me] = await mv.workers()
    expect(me).toMatchObject({ pid: process.pid, dead: false })
    await until(async () => (await mv.workers())[0]!.heartbeatAt > me!.heartbeatAt, WAIT)
    // A row whose heartbeat stopped long ago is shown as dead.
    await sql`INSERT INTO matview.workers (host, pid, heartbeat_at)
              VALUES ('gone', 1, now() - interval '1 minute')`.execute(db)
    const listed = await mv.workers()
    expect(listed.map((w) => [w.host, w.dead])).toContainEqual(['gone', true])
    await worker.stop()
    expect((await mv.workers()).map((w) => w.host)).toEqual(['gone'])
  })

  it('marks a view over its maxLag in status', async () => {
    const lagging = defineView({ ...customerTotals, maxLag: '1s' })
    const { mv, db } = await open(dialect, [lagging])
    await mv.update()
    let [status] = await mv.status()
    expect(status).toMatchObject({ maxLagSeconds: 1, overMaxLag: false })
    expect(checkProblem(status!)).toBeUndefined()
    await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (1, 1, 'paid')`.execute(
      db,
    )
    await sleep(1300)
    ;[status] = await mv.status()
    expect(status!.overMaxLag).toBe(true)
    expect(checkProblem(status!)).toBe('lag over maxLag 1s')
    await mv.update()
    ;[status] = await mv.status()
    expect(status!.overMaxLag).toBe(false)
  })
})
