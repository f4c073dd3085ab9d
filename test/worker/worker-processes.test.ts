import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { type Kysely, sql } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import {
  BIN,
  CLI_ENV,
  CUSTOMER_TOTALS_QUERY,
  customerTotalsViewText,
  PACKAGE,
  runCli,
  writeConfig,
} from '../support/cli.js'
import { available, freshDatabase, type TestDatabase } from '../support/dialects.js'

// `matview worker` as users run it: the built bin, several processes on one PostgreSQL.
// PostgreSQL only: PGlite's data directory belongs to one process, so neither several workers
// nor a writer in another process can reach it (worker.test.ts covers the worker on PGlite).

const VIEWS = {
  customer_totals: {
    query: customerTotalsQuery,
    columns: ['customer_id', 'region', 'order_count', 'total_cents'],
  },
  region_totals: {
    query: sql`SELECT c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
      FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid'
      GROUP BY c.region`,
    columns: ['region', 'order_count', 'total_cents'],
  },
}

/**
 * A config with customer_totals (column maps; `extra` adds to it) and region_totals (a query
 * mapping); `top` adds top-level fields.
 */
function writeWorkerConfig(dir: string, url: string, extra = '', top = ''): void {
  writeConfig(dir, {
    database: url,
    batchSize: 50,
    fields: top,
    views: [
      customerTotalsViewText(CUSTOMER_TOTALS_QUERY, extra),
      `defineView({
      name: 'region_totals',
      key: ['region'],
      query: sql\`SELECT c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
        FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid'
        GROUP BY c.region\`,
      sources: {
        customers: { region: 'region' },
        orders: sql\`SELECT c.region FROM changed o JOIN customers c ON c.id = o.customer_id\`,
      },
    })`,
    ],
  })
}

interface WorkerProcess {
  child: ChildProcess
  stderr: () => string
  exited: Promise<number | null>
}

const children: ChildProcess[] = []
const databases: TestDatabase[] = []
afterEach(async () => {
  for (const child of children.splice(0))
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  for (const database of databases.splice(0)) await database.close()
})

function startWorker(dir: string, args: string[] = []): WorkerProcess {
  const child = spawn(process.execPath, [BIN, 'worker', '--poll', '1s', ...args], {
    cwd: dir,
    env: CLI_ENV,
  })
  children.push(child)
  let stderr = ''
  child.stderr!.on('data', (chunk) => {
    stderr += chunk
  })
  child.stdout!.resume()
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, stderr: () => stderr, exited }
}

async function setup(extra = '', top = ''): Promise<{ db: Kysely<any>; dir: string; url: string }> {
  const database = await freshDatabase('postgres')
  databases.push(database)
  await createDemoSchema(database.db, { customers: 100, orders: 1000 })
  const dir = mkdtempSync(join(tmpdir(), 'matview-worker-'))
  writeWorkerConfig(dir, database.url!, extra, top)
  return { db: database.db, dir, url: database.url! }
}

/** How long a condition may take on a loaded machine: generous, the tests wait on conditions. */
const WAIT = 60_000

async function until(check: () => Promise<boolean>, timeoutMs: number, what: string) {
  const started = Date.now()
  while (Date.now() - started < timeoutMs) {
    if (await check().catch(() => false)) return Date.now() - started
    await sleep(100)
  }
  throw new Error(`${what}: not within ${timeoutMs}ms`)
}

async function allFresh(db: Kysely<any>): Promise<boolean> {
  for (const [name, view] of Object.entries(VIEWS)) {
    const diff = await queryDifferences(db, name, view.query, view.columns)
    if (diff.extra.length > 0 || diff.missing.length > 0) return false
  }
  return true
}

async function workerRows(db: Kysely<any>) {
  const { rows } = await sql<{ pid: number; doing: string | null }>`
    SELECT pid, doing FROM matview.workers ORDER BY id`.execute(db)
  return rows
}

/** A free TCP port for --metrics-port. */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

const ready = await available('postgres')

describe.skipIf(!ready)('matview worker processes (PostgreSQL)', () => {
  it('three workers and concurrent writers: views equal their queries, no view ran twice at once', async () => {
    const { db, dir } = await setup()
    const workers = [0, 1, 2].map(() => startWorker(dir, ['--concurrency', '2']))
    await until(async () => (await workerRows(db)).length === 3, WAIT, 'three workers register')
    // Four writers for 3 seconds: new orders, status flips, customers moving region.
    const stopAt = Date.now() + 3000
    const writer = async (n: number) => {
      let i = 0
      while (Date.now() < stopAt) {
        i++
        const customer = 1 + ((n * 37 + i * 11) % 100)
        if (i % 3 === 0)
          await sql`UPDATE orders SET status = CASE status WHEN 'paid' THEN 'pending' ELSE 'paid' END
                    WHERE id = ${1 + ((n * 101 + i * 13) % 1000)}`.execute(db)
        else if (i % 7 === 0)
          await sql`UPDATE customers SET region = ${['north', 'south', 'mars'][i % 3]!} WHERE id = ${customer}`.execute(
            db,
          )
        else
          await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (${customer}, ${i}, 'paid')`.execute(
            db,
          )
        await sleep(5)
      }
    }
    await Promise.all([0, 1, 2, 3].map(writer))
    await until(() => allFresh(db), WAIT, 'the views catch up')
    for (const w of workers) w.child.kill('SIGTERM')
    expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0, 0])
    expect(await workerRows(db)).toEqual([])
    expect(await allFresh(db)).toBe(true)

    // The run history: per view, no run started before the previous one finished.
    const { rows } = await sql<{ view: string; started_at: Date; finished_at: Date; pid: number }>`
      SELECT view, started_at, finished_at, pid FROM matview.runs ORDER BY view, started_at`.execute(
      db,
    )
    const pids = new Set(rows.map((r) => r.pid))
    expect(pids.size).toBeGreaterThan(1)
    for (let i = 1; i < rows.length; i++) {
      const [previous, run] = [rows[i - 1]!, rows[i]!]
      if (previous.view !== run.view) continue
      expect(previous.finished_at).not.toBeNull()
      expect(new Date(previous.finished_at).getTime()).toBeLessThanOrEqual(
        new Date(run.started_at).getTime(),
      )
    }
  })

  it('three workers on a partitioned view: they apply it together, never one partition twice at once', async () => {
    const { db, dir } = await setup('partitions: 4,')
    const workers = [0, 1, 2].map(() => startWorker(dir, ['--batch-size', '10']))
    await until(async () => (await workerRows(db)).length === 3, WAIT, 'three workers register')
    await until(() => allFresh(db), WAIT, 'the views are created')
    // Thousands of keys at once, then writers for two seconds.
    await db.transaction().execute(async (trx) => {
      await sql`INSERT INTO customers (id, name, region)
                SELECT g, 'c' || g, 'east' FROM generate_series(1000, 4000) g`.execute(trx)
      await sql`INSERT INTO orders (customer_id, amount_cents, status)
                SELECT g, 100, 'paid' FROM generate_series(1000, 4000) g`.execute(trx)
    })
    const stopAt = Date.now() + 2000
    let i = 0
    while (Date.now() < stopAt) {
      i++
      await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = ${1 + ((i * 37) % 1000)}`.execute(
        db,
      )
      await sleep(5)
    }
    await until(() => allFresh(db), WAIT, 'the views catch up')
    for (const w of workers) w.child.kill('SIGTERM')
    expect(await Promise.all(workers.map((w) => w.exited))).toEqual([0, 0, 0])
    const { rows: overlapping } = await sql`
      SELECT a.partition FROM matview.run_partitions a JOIN matview.run_partitions b
        ON a.partition = b.partition AND a.run_id < b.run_id
       AND a.started_at < b.finished_at AND b.started_at < a.finished_at`.execute(db)
    expect(overlapping).toEqual([])
    const { rows } = await sql<{ pids: number; partitions: number }>`
      SELECT count(DISTINCT r.pid)::int AS pids, count(DISTINCT p.partition)::int AS partitions
      FROM matview.run_partitions p JOIN matview.runs r ON r.id = p.run_id`.execute(db)
    expect(rows[0]).toEqual({ pids: expect.any(Number), partitions: 4 })
    expect(rows[0]!.pids).toBeGreaterThan(1)
  })

  it('a worker killed with SIGKILL mid-run: another takes over its view', async () => {
    // Batches, not a rebuild: 5,000 of 6,000 keys pending would make `auto` rebuild at once.
    const { db, dir } = await setup('', "strategy: 'incremental',")
    const first = startWorker(dir, ['--batch-size', '10'])
    await until(async () => (await workerRows(db)).length === 1, WAIT, 'the first registers')
    await until(() => allFresh(db), WAIT, 'the first creates the views')
    // Enough work for many batches of 10 keys: 5,000 new customers with an order each.
    await db.transaction().execute(async (trx) => {
      await sql`INSERT INTO customers (id, name, region)
                SELECT g, 'c' || g, 'east' FROM generate_series(1000, 6000) g`.execute(trx)
      await sql`INSERT INTO orders (customer_id, amount_cents, status)
                SELECT g, 100, 'paid' FROM generate_series(1000, 6000) g`.execute(trx)
    })
    const { rows: ids } = await sql<{
      id: number
    }>`SELECT id FROM matview.views WHERE name = 'customer_totals'`.execute(db)
    const log = sql.id('matview', `log_${ids[0]!.id}`)
    await until(
      async () => {
        const { rows } = await sql<{ running: number; left: number }>`
          SELECT (SELECT count(*)::int FROM matview.runs
                  WHERE outcome = 'running' AND view = 'customer_totals'
                    AND pid = ${first.child.pid!}) AS running,
                 (SELECT count(*)::int FROM ${log}) AS left`.execute(db)
        return rows[0]!.running > 0 && rows[0]!.left > 500
      },
      WAIT,
      'the first is mid-run with work left',
    )
    first.child.kill('SIGKILL')
    await first.exited
    const second = startWorker(dir)
    await until(() => allFresh(db), WAIT, 'the second finishes the views')
    // The view's log now: the first may have been rebuilding it (5,000 of 6,000 keys pending
    // is past the automatic strategy's share), and the second finished that rebuild.
    const { rows: now } = await sql<{
      id: number
    }>`SELECT id FROM matview.views WHERE name = 'customer_totals'`.execute(db)
    const { rows: left } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM ${sql.id('matview', `log_${now[0]!.id}`)}`.execute(db)
    expect(left[0]!.n).toBe(0)
    // The killed run is closed as interrupted by the next run of its view.
    const { rows } = await sql<{ outcome: string }>`
      SELECT outcome FROM matview.runs WHERE pid = ${first.child.pid!} AND view = 'customer_totals'
      ORDER BY id DESC LIMIT 1`.execute(db)
    expect(rows[0]!.outcome).toBe('interrupted')
    // The killed worker's row stays until its heartbeat is stale: status shows it dead then.
    const pids = (await workerRows(db)).map((w) => w.pid)
    expect(pids).toEqual([first.child.pid, second.child.pid])
    await sql`UPDATE matview.workers SET heartbeat_at = now() - interval '1 minute'
              WHERE pid = ${first.child.pid!}`.execute(db)
    const status = await runCli(['status'], dir)
    expect(status.code).toBe(0)
    const lines = status.stdout.split('\n')
    expect(lines.some((l) => /^WORKER\s+HOST\s+PID/.test(l))).toBe(true)
    expect(lines.find((l) => l.includes(` ${first.child.pid} `))).toMatch(/\bdead\b/)
    expect(lines.find((l) => l.includes(` ${second.child.pid} `))).toMatch(/\balive\b/)
    second.child.kill('SIGTERM')
    expect(await second.exited).toBe(0)
  })

  it('carries on when the server drops every connection of the worker (as a restart does)', async () => {
    // Stopping the shared server would break the tests running beside this one; terminating
    // the worker's backends is what a restart looks like from the worker's side.
    const { db, dir, url } = await setup()
    const worker = startWorker(dir)
    await until(async () => (await workerRows(db)).length === 1, WAIT, 'the worker registers')
    await until(() => allFresh(db), WAIT, 'the worker creates the views')
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    // Every other backend of the database: the worker's and this test's own pool (which
    // reconnects; the writes below retry until it has).
    const terminate = () =>
      admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()`)
    const retrying = (what: string, write: () => Promise<unknown>) =>
      until(
        async () => {
          await write()
          return true
        },
        WAIT,
        what,
      )
    for (let round = 0; round < 3; round++) {
      await retrying('insert', () =>
        sql`INSERT INTO orders (customer_id, amount_cents, status)
            SELECT 1 + g % 100, g, 'paid' FROM generate_series(1, 300) AS g`.execute(db),
      )
      await sleep(150)
      // The worker's listening connection at least (and whatever it had open).
      expect((await terminate()).rowCount).toBeGreaterThan(0)
      await retrying('update', () =>
        sql`UPDATE customers SET region = ${`r${round}`} WHERE id = ${round + 1}`.execute(db),
      )
      await until(() => allFresh(db), WAIT, `round ${round}: the views catch up after the drop`)
    }
    await admin.end()
    expect(worker.child.exitCode).toBeNull()
    expect(await workerRows(db)).toHaveLength(1)
    worker.child.kill('SIGTERM')
    expect(await worker.exited).toBe(0)
  }, 300_000)

  it('status --check exits 4 when a view is over its maxLag, 0 when fresh', async () => {
    const { db, dir } = await setup("maxLag: '1s',")
    expect((await runCli(['update'], dir)).code).toBe(0)
    const fresh = await runCli(['status', '--check'], dir)
    expect(fresh).toMatchObject({ code: 0 })
    expect(fresh.stdout).toContain('check ok')
    await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (1, 1, 'paid')`.execute(
      db,
    )
    await sleep(1300)
    const late = await runCli(['status', '--check'], dir)
    expect(late.code).toBe(4)
    expect(late.stdout).toContain('check failed: customer_totals: lag over maxLag 1s')
    expect(late.stdout).toMatch(/over maxLag 1s/)
    // Without --check, the same state is not an error.
    expect((await runCli(['status'], dir)).code).toBe(0)
    expect((await runCli(['update'], dir)).code).toBe(0)
    expect((await runCli(['status', '--check'], dir)).code).toBe(0)
    // retry: nothing set aside here; an unknown view is a usage error naming the known ones.
    expect(await runCli(['retry', 'customer_totals'], dir)).toMatchObject({
      code: 0,
      stdout: 'customer_totals: no keys set aside\n',
    })
    const unknown = await runCli(['retry', 'nope'], dir)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain(
      'unknown view "nope"; known views: customer_totals, region_totals',
    )
  })

  it('serves /metrics and /healthz, logs JSON, and exits 0 on SIGTERM after deregistering', async () => {
    const { db, dir } = await setup()
    const port = await freePort()
    const worker = startWorker(dir, ['--metrics-port', String(port), '--log-format', 'json'])
    await until(async () => (await workerRows(db)).length === 1, WAIT, 'the worker registers')
    await until(() => allFresh(db), WAIT, 'the views are created')
    await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (3, 500, 'paid')`.execute(
      db,
    )
    await until(() => allFresh(db), WAIT, 'the write is applied')

    const health = await fetch(`http://127.0.0.1:${port}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.json()).toMatchObject({ ok: true, database: true, loop: true })

    const response = await fetch(`http://127.0.0.1:${port}/metrics`)
    expect(response.headers.get('content-type')).toContain('text/plain')
    const samples = parsePrometheus(await response.text())
    expect(samples.get('matview_worker_up')).toBe(1)
    expect(samples.get('matview_view_pending_keys{view="customer_totals"}')).toBe(0)
    expect(samples.get('matview_view_lag_seconds{view="region_totals"}')).toBe(0)
    expect(samples.get('matview_rows_applied_total{view="customer_totals",kind="updated"}')).toBe(1)
    expect(
      samples.get('matview_batch_duration_seconds_count{view="customer_totals"}'),
    ).toBeGreaterThan(0)
    expect(samples.get('matview_view_failures_total{view="customer_totals"}')).toBe(0)
    expect(
      samples.get('matview_view_last_success_timestamp_seconds{view="customer_totals"}'),
    ).toBeGreaterThan(Date.now() / 1000 - 60)

    worker.child.kill('SIGTERM')
    expect(await worker.exited).toBe(0)
    expect(await workerRows(db)).toEqual([])
    const logs = worker
      .stderr()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { level: number; msg: string; pid: number })
    expect(logs.some((l) => l.msg.startsWith('worker started'))).toBe(true)
    expect(logs.some((l) => l.msg.startsWith('SIGTERM: stopping'))).toBe(true)
    expect(logs.at(-1)!.msg).toMatch(/^worker stopped: \d+ runs, 0 failed$/)
  })
})

/** `name{labels} value` lines of the Prometheus text format, by `name{labels}`. */
function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$/.exec(line)
    if (!match) throw new Error(`not a Prometheus sample: ${line}`)
    samples.set(match[1]!, Number(match[2]))
  }
  return samples
}

describe('matview worker stopping (PGlite in the worker process)', () => {
  /** A worker whose one view is a hand-written hook that takes 5 minutes per batch. */
  async function slowWorker(grace: string): Promise<WorkerProcess> {
    const dir = mkdtempSync(join(tmpdir(), 'matview-worker-'))
    writeFileSync(
      join(dir, 'matview.config.mjs'),
      `import { defineHandwrittenView } from ${JSON.stringify(PACKAGE)}
export default {
  database: 'pglite:memory',
  views: [
    defineHandwrittenView({
      name: 'slow',
      needsInsert: () => 1,
      doInsert: async () => {
        process.stderr.write('batch started\\n')
        await new Promise((resolve) => setTimeout(resolve, 300_000))
        return 1
      },
    }),
  ],
}
`,
    )
    const worker = startWorker(dir, ['--grace', grace])
    await until(async () => worker.stderr().includes('batch started'), WAIT, 'the batch starts')
    return worker
  }

  it('exits 143 when the running batch outlasts --grace', async () => {
    const worker = await slowWorker('1s')
    const sent = Date.now()
    worker.child.kill('SIGTERM')
    expect(await worker.exited).toBe(143)
    // It waited the grace period, not for the batch (5 minutes, past the test's timeout).
    expect(Date.now() - sent).toBeGreaterThanOrEqual(1000)
    expect(worker.stderr()).toContain('waiting up to 1s for slow to finish its batch')
  })

  it('exits at once on a second signal', async () => {
    // Neither the batch (5 minutes) nor the grace period (10 minutes) outlasts the test.
    const worker = await slowWorker('10m')
    worker.child.kill('SIGTERM')
    await until(async () => worker.stderr().includes('SIGTERM: stopping'), WAIT, 'the first signal')
    worker.child.kill('SIGTERM')
    expect(await worker.exited).toBe(143)
  })
})
