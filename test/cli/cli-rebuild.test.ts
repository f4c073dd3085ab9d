import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema } from '../../src/demo/demo-schema.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import {
  BIN,
  CLI_ENV,
  CUSTOMER_TOTALS_QUERY as QUERY,
  runCli,
  writeCustomerTotalsConfig,
} from '../support/cli.js'
import { available, freshDatabase, type TestDatabase } from '../support/dialects.js'

// `matview rebuild` as a user runs it: the built bin as a subprocess, a config file importing
// the built package, a PostgreSQL database; and a rebuild killed with SIGKILL, then run again.
const WIDER = `SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents,
  max(o.amount_cents) AS max_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status IN ('paid', 'pending')
  GROUP BY o.customer_id, c.region`

describe('matview rebuild (CLI) on PostgreSQL', () => {
  let database: TestDatabase | undefined
  afterEach(async () => {
    await database?.close()
  })

  const setUp = async () => {
    database = await freshDatabase('postgres')
    await createDemoSchema(database.db, { customers: 100, orders: 1000 })
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeCustomerTotalsConfig(dir, database.url!, QUERY)
    const created = await runCli(['create'], dir)
    expect(created.code, created.stdout + created.stderr).toBe(0)
    return dir
  }
  const equalsQuery = async (query: string, columns: string[]) =>
    expect(
      await queryDifferences(database!.db, 'customer_totals', sql.raw(query), columns),
    ).toEqual({ extra: [], missing: [] })

  it('rebuilds a changed view, finds nothing more to do, and refuses bad usage with exit 2', async () => {
    if (!(await available('postgres'))) return
    const dir = await setUp()

    const help = await runCli(['rebuild', '--help'], dir)
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Usage: matview rebuild \[options\] \[names\.\.\.\]/)
    const none = await runCli(['rebuild'], dir)
    expect(none).toMatchObject({ code: 2, stdout: '' })
    expect(none.stderr.trim()).toBe('matview: name the views to rebuild, or use --all-changed')
    const unknown = await runCli(['rebuild', 'nope'], dir)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/unknown view "nope"; known views: customer_totals/)

    writeCustomerTotalsConfig(dir, database!.url!, WIDER)
    expect((await runCli(['update'], dir)).code).toBe(1)
    const rebuilt = await runCli(['rebuild', '--all-changed'], dir)
    expect(rebuilt.stderr).toBe('')
    expect(rebuilt.code).toBe(0)
    expect(rebuilt.stdout).toMatch(/^customer_totals: done \(rebuilt\), \+100 ~0 -0 in \d+ batch/m)
    expect(rebuilt.stdout).toMatch(/^1 view in .*: 1 done$/m)
    await equalsQuery(WIDER, ['customer_id', 'region', 'order_count', 'total_cents', 'max_cents'])

    const again = await runCli(['rebuild', '--all-changed', '--json'], dir)
    expect(again.code).toBe(0)
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, views: [] })
    const plain = await runCli(['rebuild', '--all-changed'], dir)
    expect(plain.stdout.trim()).toBe(
      'nothing to rebuild: every declarative view is ready on its definition',
    )
    await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id = 4`.execute(
      database!.db,
    )
    const update = await runCli(['update'], dir)
    expect(update.code).toBe(0)
    expect(update.stdout).toMatch(/customer_totals: done, \+0 ~1 -0/)
  })

  it('a rebuild killed with SIGKILL before its swap is finished by the next run, leaving nothing behind', async () => {
    if (!(await available('postgres'))) return
    const dir = await setUp()
    const db = database!.db
    writeCustomerTotalsConfig(dir, database!.url!, WIDER)

    // A long transaction that read the table: the swap has to wait for it, and is killed waiting.
    const blocker = new pg.Client({ connectionString: database!.url })
    await blocker.connect()
    await blocker.query('BEGIN')
    await blocker.query('SELECT count(*) FROM customer_totals')
    const child = spawn(
      process.execPath,
      [BIN, 'rebuild', 'customer_totals', '--lock-timeout', '1m'],
      {
        cwd: dir,
        env: CLI_ENV,
        stdio: 'ignore',
      },
    )
    const exited = new Promise<NodeJS.Signals | null>((done) =>
      child.on('exit', (_c, s) => done(s)),
    )
    try {
      // Filled, caught up, and waiting for the lock.
      await waitFor(async () => {
        const { rows } = await sql<{ n: string }>`
          SELECT count(*) AS n FROM pg_locks WHERE NOT granted AND relation = 'customer_totals'::regclass`.execute(
          db,
        )
        return Number(rows[0]!.n) > 0
      })
      child.kill('SIGKILL')
      expect(await exited).toBe('SIGKILL')
    } finally {
      await blocker.query('COMMIT')
      await blocker.end()
    }
    // The killed process's session ends once its lock wait does.
    await waitFor(async () => {
      const { rows } = await sql<{ n: string }>`
        SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'`.execute(db)
      return Number(rows[0]!.n) === 0
    })

    const status = await runCli(['status', '--json'], dir)
    expect(JSON.parse(status.stdout)[0]).toMatchObject({ state: 'rebuilding', running: false })
    expect(await shadows(db)).toHaveLength(1)
    const refused = await runCli(['update'], dir)
    expect(refused.code).toBe(1)
    expect(refused.stdout).toMatch(/run "matview rebuild customer_totals" to finish it/)
    await equalsQuery(QUERY, ['customer_id', 'region', 'order_count', 'total_cents'])

    await sql`UPDATE orders SET amount_cents = 5 WHERE customer_id = 9`.execute(db)
    const finished = await runCli(['rebuild', 'customer_totals'], dir)
    expect(finished.code).toBe(0)
    expect(finished.stdout).toMatch(/^customer_totals: done \(resumed, rebuilt\), \+0 ~1 -0/m)
    await equalsQuery(WIDER, ['customer_id', 'region', 'order_count', 'total_cents', 'max_cents'])
    expect(await shadows(db)).toEqual([])
    const history = await runCli(['history', 'customer_totals', '--json'], dir)
    // Newest first: this rebuild, the refused update, the killed rebuild, the create.
    expect(JSON.parse(history.stdout).map((r: { outcome: string }) => r.outcome)).toEqual([
      'done',
      'failed',
      'interrupted',
      'done',
    ])
  })
})

/** Tables that are not the application's nor the view's: a rebuild's second table. */
async function shadows(db: TestDatabase['db']): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    SELECT relname AS name FROM pg_class
    WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace
      AND relname NOT IN ('customers', 'orders', 'customer_totals')`.execute(db)
  return rows.map((r) => r.name)
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out waiting')
    await sleep(50)
  }
}
