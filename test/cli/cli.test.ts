import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { lockDataDirectory } from '../../src/dialects/pglite-file-lock.js'
import { BIN, runCli } from '../support/cli.js'

describe('matview CLI', () => {
  it('runs the demo end to end on the embedded database', async () => {
    const result = await runCli(['demo', '--customers', '200', '--orders', '2000'])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/customer_totals: done, \+\d+/)
    expect(result.stdout).toMatch(/customer_totals equals its query: yes/)
    expect(result.stdout).toMatch(/region_totals: done \(created, backfilled\)/)
    expect(result.stdout).toMatch(/region_totals equals its query: yes/)
  })

  it('prints help for every command', async () => {
    for (const command of ['update', 'create', 'status', 'list', 'demo', 'init', 'exec', 'types']) {
      const result = await runCli([command, '--help'])
      expect(result.code).toBe(0)
      expect(result.stdout).toMatch(new RegExp(`Usage: matview ${command}`))
    }
  })

  it('exits 2 with one line naming the bad field for a wrong config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeFileSync(join(dir, 'matview.config.mjs'), 'export default { batchSize: -3 }\n')
    const result = await runCli(['list'], dir)
    expect(result.code).toBe(2)
    expect(result.stderr.trim()).toMatch(
      /^matview: config .*matview\.config\.mjs: batchSize: must be at least 1$/,
    )
  })

  it('exits 2 for an unknown view and lists the known ones, and for a bad flag value', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeFileSync(
      join(dir, 'matview.config.mjs'),
      "export default { database: 'pglite:db', views: [{ kind: 'handwritten', name: 'a', needsInsert: () => 0, doInsert: () => 0 }] }\n",
    )
    const unknown = await runCli(['update', '--views', 'b'], dir)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/unknown view "b"; known views: a/)
    const models = await runCli(['update', '--models', 'b'], dir)
    expect(models.code).toBe(2)
    expect(models.stderr).toMatch(/unknown view "b"; known views: a/)
    const badFlag = await runCli(['update', '--batch-size', '0'], dir)
    expect(badFlag.code).toBe(2)
    expect(badFlag.stderr).toMatch(/--batch-size must be at least 1/)
    const ok = await runCli(['update', '--json'], dir)
    expect(ok.code).toBe(0)
    expect(JSON.parse(ok.stdout)).toMatchObject({
      ok: true,
      views: [{ view: 'a', outcome: 'done' }],
    })
  })

  it('names host and port when the database refuses the connection', async () => {
    const result = await runCli(['status', '--database', 'postgres://postgres@127.0.0.1:1/x'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/cannot connect to PostgreSQL at 127\.0\.0\.1:1/)
    expect(result.stderr).not.toMatch(/\n\s+at /)
  })
})

describe('matview CLI on the embedded database', () => {
  const config = (dir: string, views: string) =>
    writeFileSync(join(dir, 'matview.config.mjs'), `export default { views: [${views}] }\n`)
  const ok = "{ kind: 'handwritten', name: 'ok', needsInsert: () => 0, doInsert: () => 0 }"
  const broken =
    "{ kind: 'handwritten', name: 'broken', needsInsert: () => 1, doInsert: () => { throw new Error('hook failed') } }"

  it('keeps the default database in .matview/pglite between runs, and exits 1 when a view fails', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    config(dir, `${ok}, ${broken}`)
    const first = await runCli(['update'], dir)
    expect(first.code).toBe(1)
    expect(first.stdout).toMatch(/broken: failed, .*hook failed/)
    expect(first.stdout).toMatch(/ok: done/)
    const status = await runCli(['status', '--json'], dir)
    expect(status.code).toBe(0)
    const views = JSON.parse(status.stdout) as Array<{
      name: string
      lastRun: { outcome: string; error: string }
    }>
    expect(views.find((v) => v.name === 'broken')!.lastRun).toMatchObject({
      outcome: 'failed',
      error: 'view "broken": doInsert threw: hook failed',
    })
    expect(views.find((v) => v.name === 'ok')!.lastRun).toMatchObject({ outcome: 'done' })
  })

  it('--dry-run reports what each view needs and writes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    config(dir, broken)
    const result = await runCli(['update', '--dry-run', '--json'], dir)
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout).views[0]).toMatchObject({
      view: 'broken',
      outcome: 'dry-run',
      pending: { total: 1, detail: { insert: 1 } },
    })
    const status = await runCli(['status', '--json'], dir)
    expect(JSON.parse(status.stdout)[0].lastRun).toBeNull()
  })

  it('reads --config PATH and .config/matview.config.ts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeFileSync(join(dir, 'custom.mjs'), `export default { views: [${ok}] }\n`)
    const explicit = await runCli(['list', '--json', '--config', 'custom.mjs'], dir)
    expect(JSON.parse(explicit.stdout)).toEqual([
      { name: 'ok', kind: 'handwritten', dependsOn: [] },
    ])
    const missing = await runCli(['list', '--config', 'nope.ts'], dir)
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/config file nope\.ts does not exist/)
    const nested = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    mkdirSync(join(nested, '.config'))
    writeFileSync(
      join(nested, '.config', 'matview.config.ts'),
      `export default { views: [${ok}] as const }\n`,
    )
    const found = await runCli(['list', '--json'], nested)
    expect(JSON.parse(found.stdout)[0].name).toBe('ok')
  })
})

describe('matview CLI on a terminal', () => {
  const hasScript = spawnSync('script', ['--version']).status === 0
  it.skipIf(!hasScript)(
    'draws a live progress bar per view with done/total, rate and ETA',
    async () => {
      // util-linux `script` runs the CLI on a pseudo-terminal, as a person at a shell would.
      const command = `${process.execPath} ${BIN} demo --customers 300 --orders 3000 --batch-size 50`
      const result = spawnSync('script', ['-qec', command, '/dev/null'], {
        encoding: 'utf8',
        timeout: 60_000,
      })
      expect(result.status).toBe(0)
      expect(result.stdout).toMatch(
        /customer_totals\s+\[[█░]+\] [\d,]+\/[\d,]+ \| [\d,]+\/s \| ETA \d+s/,
      )
      expect(result.stdout).toMatch(/customer_totals: done/)
    },
  )
})

describe('the embedded database lock', () => {
  it('refuses a second process on the same data directory, and takes over a lock left by a dead one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    const release = lockDataDirectory(join(dir, 'db'))
    // update: status and history add how to get their answer instead (cli-exec.test.ts).
    const busy = await runCli(['update', '--database', 'pglite:db'], dir)
    expect(busy.code).toBe(2)
    expect(busy.stderr.trim()).toBe(
      `matview: the embedded database at ${join(dir, 'db')} is in use by another matview process (pid ${process.pid}); wait for it to finish`,
    )
    release()
    // A pid that cannot be alive: the lock is stale and the next run takes it over.
    writeFileSync(join(dir, 'db.lock'), '999999999')
    const free = await runCli(['status', '--database', 'pglite:db'], dir)
    expect(free.code).toBe(0)
  })
})
