import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { available, DIALECTS, freshDatabase, type TestDatabase } from '../support/dialects.js'

const BIN = resolve('dist/cli/main.js')

// A slow hand-written view: each batch copies `batchSize` rows of `items` into `copies` and
// takes 300 ms, so a test can signal the process in the middle of a run.
const SLOW_CONFIG = `
const count = async (db, sql) => Number((await sql\`SELECT count(*) AS n FROM items i WHERE NOT EXISTS (SELECT 1 FROM copies c WHERE c.id = i.id)\`.execute(db)).rows[0].n)
export default {
  batchSize: 10,
  views: [{
    kind: 'handwritten', name: 'copies',
    needsInsert: ({ db, sql }) => count(db, sql),
    async doInsert({ db, sql, batchSize }) {
      const r = await sql\`INSERT INTO copies SELECT id FROM items i WHERE NOT EXISTS (SELECT 1 FROM copies c WHERE c.id = i.id) ORDER BY id LIMIT \${batchSize}\`.execute(db)
      await new Promise((r) => setTimeout(r, 300))
      return Number(r.numAffectedRows ?? 0)
    },
  }],
}
`

function start(
  args: string[],
  cwd: string,
): {
  child: ChildProcess
  done: Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>
} {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd,
    env: { ...process.env, DATABASE_URL: '', MATVIEW_DATABASE_URL: '' },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const done = new Promise<{
    code: number | null
    signal: string | null
    stdout: string
    stderr: string
  }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr })))
  return { child, done }
}

describe.skipIf(!DIALECTS.includes('postgres'))(
  'matview update as a process, on PostgreSQL',
  () => {
    let database: TestDatabase
    afterEach(async () => {
      await database?.close()
    })

    async function setup(skip: () => void) {
      if (!(await available('postgres'))) skip()
      database = await freshDatabase('postgres')
      await sql`CREATE TABLE items (id int PRIMARY KEY)`.execute(database.db)
      await sql`CREATE TABLE copies (id int PRIMARY KEY)`.execute(database.db)
      await sql`INSERT INTO items SELECT generate_series(1, 200)`.execute(database.db)
      const dir = mkdtempSync(join(tmpdir(), 'matview-sig-'))
      writeFileSync(join(dir, 'matview.config.mjs'), SLOW_CONFIG)
      return dir
    }

    it('on SIGTERM finishes the current batch, records the run as interrupted and exits 143', async ({
      skip,
    }) => {
      const dir = await setup(skip)
      const { child, done } = start(['update', '--database', database.url!], dir)
      await new Promise((r) => setTimeout(r, 2500))
      child.kill('SIGTERM')
      const result = await done
      expect(result.code).toBe(143)
      const copies = Number(
        (await sql<{ n: string }>`SELECT count(*) AS n FROM copies`.execute(database.db)).rows[0]!
          .n,
      )
      // Whole batches only: nothing half-applied, and some work left for the next run.
      expect(copies % 10).toBe(0)
      expect(copies).toBeGreaterThan(0)
      expect(copies).toBeLessThan(200)
      const run = (
        await sql<{
          outcome: string
          rows_inserted: string
        }>`SELECT outcome, rows_inserted FROM matview.runs`.execute(database.db)
      ).rows
      expect(run).toEqual([{ outcome: 'interrupted', rows_inserted: String(copies) }])
      // The lock was released: the next run finishes the work.
      const again = start(['update', '--database', database.url!, '--batch-size', '100'], dir)
      expect((await again.done).code).toBe(0)
      expect(
        Number(
          (await sql<{ n: string }>`SELECT count(*) AS n FROM copies`.execute(database.db)).rows[0]!
            .n,
        ),
      ).toBe(200)
    })

    it('a second concurrent update skips the view the first one holds', async ({ skip }) => {
      const dir = await setup(skip)
      const first = start(['update', '--database', database.url!], dir)
      await new Promise((r) => setTimeout(r, 2000))
      const second = start(['update', '--database', database.url!, '--json'], dir)
      const secondResult = await second.done
      expect(secondResult.code).toBe(0)
      expect(JSON.parse(secondResult.stdout).views[0]).toMatchObject({
        view: 'copies',
        outcome: 'skipped',
        reason: 'running elsewhere',
      })
      first.child.kill('SIGINT')
      expect((await first.done).code).toBe(130)
    })
  },
)
