import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { connect, type Database } from '../../src/dialects/connect.js'

/**
 * The databases every test runs on. `MATVIEW_TEST_DIALECTS=pglite` (or `postgres`) narrows
 * the list. With CI=true an unreachable PostgreSQL fails the run; elsewhere its leg is skipped
 * with a visible message.
 */
export type DialectName = 'pglite' | 'postgres'

export const POSTGRES_ADMIN_URL =
  process.env.MATVIEW_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

const requested = (process.env.MATVIEW_TEST_DIALECTS ?? 'pglite,postgres')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean) as DialectName[]

let postgresReachable: Promise<boolean> | undefined
async function checkPostgres(): Promise<boolean> {
  postgresReachable ??= (async () => {
    const client = new pg.Client({
      connectionString: POSTGRES_ADMIN_URL,
      connectionTimeoutMillis: 3000,
    })
    try {
      await client.connect()
      await client.end()
      return true
    } catch (error) {
      if (process.env.CI === 'true') {
        throw new Error(
          `PostgreSQL is unreachable at ${POSTGRES_ADMIN_URL} and CI=true: ${(error as Error).message}`,
        )
      }
      console.warn(
        `\n⚠ PostgreSQL is unreachable at ${POSTGRES_ADMIN_URL}: its tests are SKIPPED (${(error as Error).message})\n`,
      )
      return false
    }
  })()
  return postgresReachable
}

/** The dialect names requested, for `describe.each` (reachability is checked in `freshDatabase`). */
export const DIALECTS: DialectName[] = requested

/** A database of its own for one test: dropped (PostgreSQL) or discarded (PGlite) by `close`. */
export interface TestDatabase extends Database {
  readonly dialect: DialectName
  /** What a subprocess or a second connection uses to reach it (PostgreSQL URL), if it can. */
  readonly url: string | undefined
}

let pgliteTemplate: Promise<{ clone(): Promise<unknown> }> | undefined

/** Creates a fresh, empty database on the dialect. */
export async function freshDatabase(dialect: DialectName): Promise<TestDatabase> {
  if (dialect === 'pglite') {
    // Starting PGlite costs seconds; cloning a started one costs a fraction of that.
    pgliteTemplate ??= import('@electric-sql/pglite').then(({ PGlite }) => PGlite.create())
    const instance = (await (await pgliteTemplate).clone()) as { close(): Promise<void> }
    const database = await connect(instance as never)
    return {
      ...database,
      dialect,
      url: undefined,
      close: async () => {
        await database.db.destroy()
      },
    }
  }
  if (!(await checkPostgres())) throw new Error('PostgreSQL is not reachable')
  const name = `matview_test_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const url = POSTGRES_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`)
  const database = await connect(url)
  return {
    ...database,
    dialect,
    url,
    close: async () => {
      await database.close()
      const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL })
      await admin.connect()
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await admin.end()
    },
  }
}

/** Skips a PostgreSQL test with a visible reason when the server is absent outside CI. */
export async function available(dialect: DialectName): Promise<boolean> {
  return dialect === 'pglite' || (await checkPostgres())
}
