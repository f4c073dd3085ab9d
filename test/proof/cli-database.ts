import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Kysely } from 'kysely'
import { connect } from '../../src/dialects/connect.js'
import { type DialectName, freshDatabase } from '../support/dialects.js'

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
      close: () => database.close(),
    }
  }
  return {
    dialect,
    dir,
    spec: 'pglite:db',
    async use(fn) {
      const database = await connect(`pglite:${join(dir, 'db')}`)
      try {
        return await fn(database.db)
      } finally {
        await database.close()
      }
    },
    close: async () => {},
  }
}
