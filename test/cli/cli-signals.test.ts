import { type ChildProcess, spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { BIN, CLI_ENV } from '../support/cli.js'
import { useCliDatabase } from '../support/cli-database.js'
import { DIALECTS } from '../support/dialects.js'

const ITEMS = 5000

// A hand-written view that copies `items` into `copies`, `batchSize` rows a batch, and says
// "batch" on stderr after each one, so a test can signal the process in the middle of a run.
// Its batches only wait for the database: on PGlite (in this process) nothing but the
// database's own promises runs between them, which is how a declarative view's batches run.
const CONFIG = `
const left = async (db, sql) => Number((await sql\`SELECT (SELECT count(*) FROM items) - (SELECT count(*) FROM copies) AS n\`.execute(db)).rows[0].n)
export default {
  batchSize: 10,
  views: [{
    kind: 'handwritten', name: 'copies',
    needsInsert: ({ db, sql }) => left(db, sql),
    async doInsert({ db, sql, batchSize }) {
      const r = await sql\`INSERT INTO copies SELECT id FROM items WHERE id > (SELECT coalesce(max(id), 0) FROM copies) ORDER BY id LIMIT \${batchSize}\`.execute(db)
      process.stderr.write('batch\\n')
      return Number(r.numAffectedRows ?? 0)
    },
  }],
}
`

interface Exit {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `matview ARGS` in `dir`; `batches(n)` resolves once it has committed n batches. */
function start(args: string[], dir: string) {
  const child: ChildProcess = spawn(process.execPath, [BIN, ...args], { cwd: dir, env: CLI_ENV })
  let stdout = ''
  let stderr = ''
  const waiting: { n: number; resolve: () => void }[] = []
  const seen = () => stderr.split('\n').filter((l) => l === 'batch').length
  child.stdout!.on('data', (d) => (stdout += d))
  child.stderr!.on('data', (d) => {
    stderr += d
    for (const w of waiting.splice(0)) {
      if (seen() >= w.n) w.resolve()
      else waiting.push(w)
    }
  })
  const done = new Promise<Exit>((resolve) =>
    child.on('exit', (code) => resolve({ code, stdout, stderr })),
  )
  const batches = (n: number) =>
    new Promise<void>((resolve, reject) => {
      if (seen() >= n) return resolve()
      waiting.push({ n, resolve })
      void done.then(() => reject(new Error(`exited after ${seen()} batches: ${stderr}`)))
    })
  return { child, done, batches }
}

describe.each(DIALECTS)('matview update as a process, on %s', (dialect) => {
  const database = useCliDatabase(dialect, async (d) => {
    await d.exec(`CREATE TABLE items (id int PRIMARY KEY);
      CREATE TABLE copies (id int PRIMARY KEY);
      INSERT INTO items SELECT generate_series(1, ${ITEMS});`)
    writeFileSync(join(d.dir, 'matview.config.mjs'), CONFIG)
  })
  const copies = () =>
    database.use(
      async (db) =>
        (await sql<{ n: number }>`SELECT count(*)::int AS n FROM copies`.execute(db)).rows[0]!.n,
    )
  const runs = () =>
    database.use(
      async (db) =>
        (
          await sql<{
            outcome: string
            rows_inserted: number
          }>`SELECT outcome, rows_inserted::int FROM matview.runs ORDER BY id`.execute(db)
        ).rows,
    )

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)(
    'on %s finishes the current batch, records the run as interrupted and exits %i',
    async (signal, code) => {
      const { child, done, batches } = start(['update', '--database', database.spec], database.dir)
      await batches(3)
      child.kill(signal)
      const result = await done
      expect(result.code).toBe(code)
      expect(result.stderr).toContain(`${signal}: stopping after the current batch`)
      expect(result.stdout).toMatch(/^copies: interrupted, \+[\d,]+ ~0 -0 in [\d,]+ batches/m)
      expect(result.stdout).not.toContain('interrupted (interrupted)')
      const copied = await copies()
      // Whole batches only: nothing half-applied, and most of the work left for the next run.
      expect(copied % 10).toBe(0)
      expect(copied).toBeGreaterThanOrEqual(30)
      expect(copied).toBeLessThan(ITEMS)
      expect(await runs()).toEqual([{ outcome: 'interrupted', rows_inserted: copied }])
      // The lock was released: the next run finishes the work.
      const again = start(
        ['update', '--database', database.spec, '--batch-size', '1000'],
        database.dir,
      )
      expect((await again.done).code).toBe(0)
      expect(await copies()).toBe(ITEMS)
    },
  )

  it('a second signal exits at once; the open batch rolls back', async () => {
    const { child, done, batches } = start(['update', '--database', database.spec], database.dir)
    await batches(3)
    child.kill('SIGTERM')
    child.kill('SIGTERM')
    expect((await done).code).toBe(143)
    expect((await copies()) % 10).toBe(0)
  })

  it.skipIf(dialect === 'pglite')(
    'a second concurrent update skips the view the first one holds (PGlite admits one process at a time)',
    async () => {
      const first = start(['update', '--database', database.spec], database.dir)
      await first.batches(3)
      const second = start(['update', '--database', database.spec, '--json'], database.dir)
      const secondResult = await second.done
      expect(secondResult.code).toBe(0)
      expect(JSON.parse(secondResult.stdout).views[0]).toMatchObject({
        view: 'copies',
        outcome: 'skipped',
        reason: 'running elsewhere',
      })
      first.child.kill('SIGINT')
      expect((await first.done).code).toBe(130)
    },
  )
})
