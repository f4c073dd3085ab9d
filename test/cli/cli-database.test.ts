import { execFile } from 'node:child_process'
import { mkdtempSync, realpathSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { createMatview } from '../../src/index.js'
import { BIN, CLI_ENV, type CliResult, writeConfig } from '../support/cli.js'
import { available, freshDatabase, type TestDatabase } from '../support/dialects.js'

// Which database a command opens: --database, then a database given in code, then
// MATVIEW_DATABASE_URL / DATABASE_URL, then the config file. The demo opens only its own.

function run(args: string[], cwd: string, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd, env: { ...CLI_ENV, ...env } },
      (error, stdout, stderr) =>
        done({
          code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
          stdout,
          stderr,
        }),
    )
  })
}

/** The URL with a password PostgreSQL (trust auth) ignores, to check it is never printed. */
function withPassword(url: string): string {
  const parsed = new URL(url)
  parsed.password = 'sekret'
  return parsed.toString()
}

async function tablesOf(database: TestDatabase): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    SELECT table_schema || '.' || table_name AS name FROM information_schema.tables
    WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`.execute(database.db)
  return rows.map((r) => r.name)
}

describe('the database a command opens', () => {
  let database: TestDatabase | undefined
  afterEach(async () => {
    await database?.close()
    database = undefined
  })

  async function postgres(skip: (reason: string) => void): Promise<TestDatabase> {
    if (!(await available('postgres'))) skip('PostgreSQL is not reachable')
    database = await freshDatabase('postgres')
    return database
  }

  it('createMatview({ database }) opens that database even when DATABASE_URL names another', async () => {
    const saved = { ...process.env }
    // A server that is not there: opening it would fail.
    process.env.DATABASE_URL = 'postgres://postgres@127.0.0.1:1/nowhere'
    process.env.MATVIEW_DATABASE_URL = 'postgres://postgres@127.0.0.1:1/nowhere'
    try {
      const mv = await createMatview({ database: 'pglite:memory' })
      expect(mv.database.description).toBe('pglite:memory')
      expect(mv.config.databaseFrom).toBe('the database option')
      await mv.close()
    } finally {
      process.env.DATABASE_URL = saved.DATABASE_URL
      process.env.MATVIEW_DATABASE_URL = saved.MATVIEW_DATABASE_URL
      if (saved.DATABASE_URL === undefined) delete process.env.DATABASE_URL
      if (saved.MATVIEW_DATABASE_URL === undefined) delete process.env.MATVIEW_DATABASE_URL
    }
  })

  it('the demo leaves the database in DATABASE_URL alone, even one with a customers table', async ({
    skip,
  }) => {
    const pg = await postgres(skip)
    await sql`CREATE TABLE customers (id int PRIMARY KEY)`.execute(pg.db)
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    const result = await run(['demo', '--customers', '50', '--orders', '300'], dir, {
      DATABASE_URL: pg.url!,
      MATVIEW_DATABASE_URL: pg.url!,
    })
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(await tablesOf(pg)).toEqual(['public.customers'])
  })

  it('status and -v say which database, and from where, without the password', async ({ skip }) => {
    const pg = await postgres(skip)
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeConfig(dir, "export default { database: 'pglite:db', views: [] }")
    const name = new URL(pg.url!).pathname
    const url = withPassword(pg.url!)
    // The environment wins over the file.
    const status = await run(['status'], dir, { DATABASE_URL: url })
    expect(status.code).toBe(0)
    expect(status.stdout).toContain(
      `database: postgres://postgres@127.0.0.1:5432${name} (from DATABASE_URL)`,
    )
    const verbose = await run(['update', '-v', '--database', url], dir)
    expect(verbose.code).toBe(0)
    expect(verbose.stderr).toContain(
      `debug database: postgres://postgres@127.0.0.1:5432${name} (from --database)`,
    )
    for (const out of [status.stdout, status.stderr, verbose.stdout, verbose.stderr])
      expect(out).not.toContain('sekret')
    // The file's embedded database, by its full path.
    const embedded = await run(['status'], dir)
    expect(embedded.code).toBe(0)
    expect(embedded.stdout).toContain(
      `database: pglite:${join(realpathSync(dir), 'db')} (from config ${join(realpathSync(dir), 'matview.config.mjs')})`,
    )
  })
})
