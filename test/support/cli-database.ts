import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import type { Kysely } from 'kysely'
import pg from 'pg'
import { afterEach, beforeEach } from 'vitest'
import { connect } from '../../src/dialects/connect.js'
import { available, type DialectName, freshDatabase } from './dialects.js'

/**
 * A database a CLI subprocess can open, on either dialect, and a way for the test to look at it
 * between runs. PostgreSQL: a fresh database and its URL. PGlite: a data directory in the run's
 * working directory, opened by the test only while no CLI process holds it (the embedded
 * database admits one process at a time).
 */
export interface CliDatabase {
  readonly dialect: DialectName
  /** The working directory of the CLI runs (the config file goes here). */
  readonly dir: string
  /** What the config's `database` says. */
  readonly spec: string
  /** Runs `fn` on a connection of the test's own. */
  use<T>(fn: (db: Kysely<any>) => Promise<T>): Promise<T>
  /** Runs a script of several statements, as psql or a migration tool does. */
  exec(script: string): Promise<void>
  close(): Promise<void>
}

export async function cliDatabase(dialect: DialectName): Promise<CliDatabase> {
  const dir = mkdtempSync(join(tmpdir(), 'matview-proof-'))
  if (dialect === 'postgres') {
    const database = await freshDatabase('postgres')
    return {
      dialect,
      dir,
      spec: database.url!,
      use: (fn) => fn(database.db),
      async exec(script) {
        // pg's simple query protocol (no parameters) takes several statements at once.
        const client = new pg.Client({ connectionString: database.url! })
        await client.connect()
        try {
          await client.query(script)
        } finally {
          await client.end()
        }
      },
      close: () => database.close(),
    }
  }
  const path = join(dir, 'db')
  return {
    dialect,
    dir,
    spec: 'pglite:db',
    async use(fn) {
      const database = await connect(`pglite:${path}`)
      try {
        return await fn(database.db)
      } finally {
        await database.close()
      }
    },
    async exec(script) {
      // Kysely's PGlite dialect runs one statement per query; exec() takes a script.
      const pglite = await PGlite.create(path)
      try {
        await pglite.exec(script)
      } finally {
        await pglite.close()
      }
    },
    close: async () => {},
  }
}

/**
 * A {@link CliDatabase} for each test of the enclosing `describe`, closed after it; the test is
 * skipped when PostgreSQL is not there. The object returned stays the same and is refilled
 * before each test (see `useTestDatabase`): read it only inside hooks and tests.
 */
export function useCliDatabase(
  dialect: DialectName,
  setup?: (database: CliDatabase) => Promise<unknown>,
): CliDatabase {
  const current = {} as CliDatabase
  let opened: CliDatabase | undefined
  beforeEach(async ({ skip }) => {
    if (!(await available(dialect))) skip()
    opened = await cliDatabase(dialect)
    Object.assign(current, opened)
    await setup?.(current)
  })
  afterEach(async () => {
    await opened?.close()
    opened = undefined
  })
  return current
}
