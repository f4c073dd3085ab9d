import { resolve } from 'node:path'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { ConfigError, ConnectionError, errorMessage } from '../errors/matview-error.js'
import type { DialectAdapter } from './dialect-adapter.js'
import { type Listen, pgliteListen, postgresListen } from './listen.js'
import { createPgliteAdapter } from './pglite.js'
import { PGliteDialect } from './pglite-dialect.js'
import { lockDataDirectory } from './pglite-file-lock.js'
import { postgresAdapter } from './postgres.js'

/** An open database: the Kysely instance, what it is, and how to close what matview opened. */
export interface Database {
  readonly db: Kysely<any>
  readonly adapter: DialectAdapter
  /** Where it is, without a password: for messages and `status`. */
  readonly description: string
  /** LISTEN for notifications, where matview knows how to (its own connections, PGlite). */
  readonly listen?: Listen
  close(): Promise<void>
}

/**
 * What `database` in the config may be: a URL, a Kysely instance, a PGlite instance, or a
 * {@link Database} already open (tests, or an application sharing one PGlite with matview).
 */
export type DatabaseSpec = string | Kysely<any> | PGliteLike | Database

/** The part of a PGlite instance matview relies on (kept structural so PGlite loads lazily). */
export interface PGliteLike {
  query: (...args: any[]) => Promise<unknown>
  exec: (...args: any[]) => Promise<unknown>
  waitReady: Promise<void>
}

export function isDatabase(value: unknown): value is Database {
  return (
    typeof value === 'object' &&
    value !== null &&
    'adapter' in value &&
    'db' in value &&
    'close' in value
  )
}

export function isPGlite(value: unknown): value is PGliteLike {
  return (
    typeof value === 'object' &&
    value !== null &&
    'waitReady' in value &&
    typeof (value as PGliteLike).exec === 'function'
  )
}

/**
 * One lock table per PGlite instance: two Matview objects on the application's instance (a
 * worker and an `update`, say) must see each other's view locks, as sessions do on PostgreSQL.
 */
const pgliteAdapters = new WeakMap<object, DialectAdapter>()
function pgliteAdapterOf(instance: object): DialectAdapter {
  let adapter = pgliteAdapters.get(instance)
  if (!adapter) {
    adapter = createPgliteAdapter()
    pgliteAdapters.set(instance, adapter)
  }
  return adapter
}

/** The default when no database is configured anywhere: persistent, so the next run sees it. */
export const DEFAULT_PGLITE_DIR = '.matview/pglite'

/**
 * Opens the database a spec names: `postgres://…`/`postgresql://…` (a `pg` pool),
 * `pglite:memory`, `pglite:PATH`, or a Kysely instance the application owns (never closed here).
 */
export async function connect(
  spec: DatabaseSpec,
  options: { cwd?: string } = {},
): Promise<Database> {
  // Handles the caller owns are never closed here.
  if (isDatabase(spec)) return { ...spec, close: async () => {} }
  if (isPGlite(spec)) {
    const db = new Kysely<any>({ dialect: new PGliteDialect(spec as never) })
    const hasListen = typeof (spec as { listen?: unknown }).listen === 'function'
    return {
      db,
      adapter: pgliteAdapterOf(spec),
      description: 'the application’s PGlite instance',
      ...(hasListen ? { listen: pgliteListen(spec as never) } : {}),
      close: async () => {},
    }
  }
  if (typeof spec !== 'string') {
    return {
      db: spec as Kysely<any>,
      adapter: postgresAdapter,
      description: 'the application’s Kysely instance',
      close: async () => {},
    }
  }
  if (/^postgres(ql)?:\/\//.test(spec)) return connectPostgres(spec)
  if (spec.startsWith('pglite:')) {
    const where = spec.slice('pglite:'.length)
    if (where === '')
      throw new ConfigError(
        'database: "pglite:" needs "memory" or a directory, e.g. pglite:.matview/pglite',
      )
    return connectPglite(
      where === 'memory' ? undefined : resolve(options.cwd ?? process.cwd(), where),
    )
  }
  throw new ConfigError(
    `database: "${redact(spec)}" is not a database URL; use postgres://user@host:port/db, pglite:memory or pglite:PATH`,
  )
}

/**
 * Planner settings for matview's own connections. A batch reads the rows of a few keys that were
 * just written, so they are in memory; with PostgreSQL's default random_page_cost (4, tuned for
 * spinning disks) a 100-key recompute of a join hashes the whole dimension table instead of
 * probing its primary key, 2 to 3 times slower. At 2, small batches probe and large ones (a
 * drain, 20,000 keys) still read their rows with a bitmap scan; at 1.1 those turned into
 * random index scans, 5 times slower (measured on the canonical workload, bench/RESULTS.md).
 * JIT compiles for tens of milliseconds, longer than a batch runs. Connections an application
 * hands us are left alone.
 *
 * Key values travel as text (key-sql.ts): with `extra_float_digits` at 0 or below (a database or
 * role default), a float key would print rounded and be read back as another value, so
 * matview's connections print floats exactly (3: every digit, the default since PostgreSQL 12).
 */
const PLANNER_SETTINGS = 'SET random_page_cost = 2; SET jit = off; SET extra_float_digits = 3'

async function connectPostgres(url: string): Promise<Database> {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(`database: "${redact(url)}" is not a valid URL`)
  }
  const where = `${parsed.hostname || 'localhost'}:${parsed.port || '5432'}`
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    application_name: 'matview',
  } as pg.PoolConfig)
  // An idle client that loses its server emits 'error' on the pool; without a listener that
  // would crash the process instead of failing the next query.
  pool.on('error', () => {})
  // A checked-out client that loses its server (restart, failover, a killed backend) rejects
  // its queries, which is how the run learns of it, and also emits 'error' on itself: with no
  // listener that would crash the process. pg-pool discards the dead client on release.
  pool.on('connect', (client) => {
    client.on('error', () => {})
    // Queued before any query of ours on this client, so it costs no round trip of its own.
    client.query(PLANNER_SETTINGS).catch(() => {})
  })
  try {
    const client = await pool.connect()
    client.release()
  } catch (error) {
    await pool.end().catch(() => {})
    throw new ConnectionError(`cannot connect to PostgreSQL at ${where}: ${errorMessage(error)}`, {
      cause: error,
    })
  }
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  return {
    db,
    adapter: postgresAdapter,
    description: describeUrl(parsed),
    listen: postgresListen(url),
    close: () => db.destroy(),
  }
}

async function connectPglite(dataDir: string | undefined): Promise<Database> {
  // Loaded on demand: the WASM build is large and PostgreSQL users never need it.
  const { PGlite } = await import('@electric-sql/pglite')
  const release = dataDir ? lockDataDirectory(dataDir) : () => {}
  try {
    const client = await PGlite.create(dataDir)
    await client.exec(PLANNER_SETTINGS)
    const db = new Kysely<any>({ dialect: new PGliteDialect(client) })
    return {
      db,
      adapter: createPgliteAdapter(),
      description: dataDir ? `pglite:${dataDir}` : 'pglite:memory',
      listen: pgliteListen(client),
      close: async () => {
        try {
          await db.destroy()
        } finally {
          release()
        }
      },
    }
  } catch (error) {
    release()
    throw new ConnectionError(
      `cannot open the embedded database ${dataDir ?? 'in memory'}: ${errorMessage(error)}`,
      {
        cause: error,
      },
    )
  }
}

/**
 * A PostgreSQL URL as `postgres://user@host:port/db`, for `status` and `-v`: no password, and no
 * query string (it may carry `password=` or key paths).
 */
function describeUrl(url: URL): string {
  const user = url.username ? `${decodeURIComponent(url.username)}@` : ''
  const port = url.port || '5432'
  return `postgres://${user}${url.hostname || 'localhost'}:${port}${decodeURIComponent(url.pathname)}`
}

/** A URL with its password replaced, safe to print. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return url
  }
}
