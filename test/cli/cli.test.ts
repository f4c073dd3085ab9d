import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

// The CLI is tested as users run it: the built bin, as a subprocess (`npm test` builds first).
const BIN = resolve('dist/cli/main.js')

function run(args: string[], cwd = mkdtempSync(join(tmpdir(), 'matview-cli-'))) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((done) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd, env: { ...process.env, DATABASE_URL: '', MATVIEW_DATABASE_URL: '' } },
      (error, stdout, stderr) =>
        done({
          code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
          stdout,
          stderr,
        }),
    )
  })
}

describe('matview CLI', () => {
  it('runs the demo end to end on the embedded database', async () => {
    const result = await run(['demo', '--customers', '200', '--orders', '2000'])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/customer_totals: done, \+\d+/)
    expect(result.stdout).toMatch(/customer_totals equals its query: yes/)
  })

  it('prints help for every command', async () => {
    for (const command of ['update', 'status', 'list', 'demo']) {
      const result = await run([command, '--help'])
      expect(result.code).toBe(0)
      expect(result.stdout).toMatch(new RegExp(`Usage: matview ${command}`))
    }
  })

  it('exits 2 with one line naming the bad field for a wrong config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeFileSync(join(dir, 'matview.config.mjs'), 'export default { batchSize: -3 }\n')
    const result = await run(['list'], dir)
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
    const unknown = await run(['update', '--views', 'b'], dir)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/unknown view "b"; known views: a/)
    const badFlag = await run(['update', '--batch-size', '0'], dir)
    expect(badFlag.code).toBe(2)
    expect(badFlag.stderr).toMatch(/--batch-size must be at least 1/)
    const ok = await run(['update', '--json'], dir)
    expect(ok.code).toBe(0)
    expect(JSON.parse(ok.stdout)).toMatchObject({
      ok: true,
      views: [{ view: 'a', outcome: 'done' }],
    })
  })

  it('names host and port when the database refuses the connection', async () => {
    const result = await run(['status', '--database', 'postgres://postgres@127.0.0.1:1/x'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/cannot connect to PostgreSQL at 127\.0\.0\.1:1/)
    expect(result.stderr).not.toMatch(/\n\s+at /)
  })
})
