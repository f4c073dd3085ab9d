import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { createDemoSchema, customerTotalsQuery } from '../../src/demo/demo-schema.js'
import { type Kysely, sql } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import {
  BIN,
  CLI_ENV,
  CUSTOMER_TOTALS_QUERY,
  customerTotalsViewText,
  runCli,
  writeConfig,
} from '../support/cli.js'
import { available, freshDatabase, type TestDatabase } from '../support/dialects.js'

// Several `matview update` processes (the built bin) applying one partitioned view at once,
// with a writer going on. PostgreSQL only: PGlite's data directory belongs to one process.

const COLUMNS = ['customer_id', 'region', 'order_count', 'total_cents']

/** customer_totals, its change log split into four partitions. */
function writePartitionedConfig(dir: string, url: string): void {
  writeConfig(dir, {
    database: url,
    batchSize: 25,
    views: [customerTotalsViewText(CUSTOMER_TOTALS_QUERY, 'partitions: 4,')],
  })
}

/** `matview update …` as a process; resolves with its exit code and output. */
function update(dir: string, args: string[]) {
  const child = spawn(process.execPath, [BIN, 'update', ...args], { cwd: dir, env: CLI_ENV })
  let out = ''
  child.stdout.on('data', (chunk) => {
    out += chunk
  })
  child.stderr.on('data', (chunk) => {
    out += chunk
  })
  return new Promise<{ code: number | null; out: string }>((resolve) =>
    child.on('exit', (code) => resolve({ code, out })),
  )
}

const databases: TestDatabase[] = []
afterEach(async () => {
  for (const database of databases.splice(0)) await database.close()
})

async function overlaps(db: Kysely<any>) {
  // Two stretches of one partition by two runs whose times overlap: one partition applied twice at once.
  const { rows } = await sql<{ partition: number }>`
    SELECT a.partition FROM matview.run_partitions a JOIN matview.run_partitions b
      ON a.partition = b.partition AND a.run_id < b.run_id
     AND a.started_at < b.finished_at AND b.started_at < a.finished_at`.execute(db)
  return rows
}

const ready = await available('postgres')

describe.skipIf(!ready)('partitioned views applied by several processes (PostgreSQL)', () => {
  it('three update processes and a writer: all finish, the view equals its query, no partition applied twice at once', async () => {
    const database = await freshDatabase('postgres')
    databases.push(database)
    const db = database.db
    await createDemoSchema(db, { customers: 6000, orders: 60_000 })
    const dir = mkdtempSync(join(tmpdir(), 'matview-partitions-'))
    writePartitionedConfig(dir, database.url!)
    const created = await runCli(['update'], dir)
    expect(created.code, created.stderr).toBe(0)
    // Thousands of pending keys: every customer's orders change.
    await sql`UPDATE orders SET amount_cents = amount_cents + 1`.execute(db)

    let writing = true
    const writer = (async () => {
      let i = 0
      while (writing) {
        i++
        await sql`UPDATE orders SET amount_cents = amount_cents + 1, status = CASE WHEN ${i} % 5 = 0 THEN 'pending' ELSE 'paid' END
                  WHERE id = ${1 + ((i * 7919) % 60_000)}`.execute(db)
        if (i % 10 === 0)
          await sql`INSERT INTO orders (customer_id, amount_cents, status) VALUES (${1 + (i % 6000)}, ${i}, 'paid')`.execute(
            db,
          )
        await sleep(2)
      }
    })()
    const runs = await Promise.all([0, 1, 2].map(() => update(dir, ['--strategy', 'incremental'])))
    writing = false
    await writer
    for (const run of runs) expect(run.code, run.out).toBe(0)

    const last = await runCli(['update', '--strategy', 'incremental'], dir)
    expect(last.code, last.stderr).toBe(0)
    expect(await queryDifferences(db, 'customer_totals', customerTotalsQuery, COLUMNS)).toEqual({
      extra: [],
      missing: [],
    })

    // The history: every partition applied, by more than one process, never two at once.
    const { rows } = await sql<{ partition: number; runs: number; pids: number }>`
      SELECT p.partition, count(DISTINCT p.run_id)::int AS runs, count(DISTINCT r.pid)::int AS pids
      FROM matview.run_partitions p JOIN matview.runs r ON r.id = p.run_id
      GROUP BY p.partition ORDER BY p.partition`.execute(db)
    expect(rows.map((r) => r.partition)).toEqual([0, 1, 2, 3])
    const { rows: processes } = await sql<{ n: number }>`
      SELECT count(DISTINCT r.pid)::int AS n FROM matview.run_partitions p
      JOIN matview.runs r ON r.id = p.run_id`.execute(db)
    expect(processes[0]!.n).toBeGreaterThan(1)
    expect(await overlaps(db)).toEqual([])
    const { rows: outcomes } = await sql<{ outcome: string }>`
      SELECT DISTINCT outcome FROM matview.runs`.execute(db)
    expect(outcomes.map((o) => o.outcome).sort()).toEqual(['done'])
  }, 120_000)
})
