// The database a benchmark run works in: a fresh PostgreSQL database (dropped at the end) or an
// in-memory PGlite. Both give the same small interface, so every phase runs on either.
import { randomBytes } from 'node:crypto'
import {
  DummyDriver,
  Kysely,
  PostgresAdapter,
  PostgresDialect,
  PostgresIntrospector,
  PostgresQueryCompiler,
} from 'kysely'
import pg from 'pg'
import { Matview } from '../../dist/index.js'

/** A quoted, optionally schema-qualified identifier: `ident('s', 't')` is `"s"."t"`. */
export const ident = (...parts) => parts.map((part) => pg.escapeIdentifier(part)).join('.')

// Compiles Kysely `sql` fragments (the view's query) to text without a connection.
const compiler = new Kysely({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
})

/** The SQL text of a constant Kysely `sql` fragment (it must carry no parameters). */
export function sqlText(raw) {
  const compiled = raw.compile(compiler)
  if (compiled.parameters.length > 0) throw new Error('internal: expected constant SQL')
  return compiled.sql.trim()
}

/**
 * Records the statements matview sends (through Kysely's `log` hook) while {@link record} runs:
 * their text, parameters and duration, for the per-statement breakdown and for EXPLAIN.
 */
export class StatementLog {
  entries = []
  #recording = false

  log = (event) => {
    if (!this.#recording || event.level !== 'query') return
    this.entries.push({
      sql: event.query.sql,
      parameters: event.query.parameters,
      ms: event.queryDurationMillis,
    })
  }

  async record(fn) {
    this.entries = []
    this.#recording = true
    try {
      return await fn()
    } finally {
      this.#recording = false
    }
  }

  /** The groups of {@link summary} that read or write data (no begin, commit, set…). */
  dataStatements() {
    return this.summary().filter((g) => /^(WITH|SELECT|INSERT|UPDATE|DELETE)\b/i.test(g.label))
  }

  /** Statements grouped by their text, most total time first. */
  summary() {
    const groups = new Map()
    for (const entry of this.entries) {
      const label = entry.sql.replace(/\s+/g, ' ').trim()
      const group = groups.get(label) ?? { label, calls: 0, ms: 0, entries: [] }
      group.calls++
      group.ms += entry.ms
      group.entries.push(entry)
      groups.set(label, group)
    }
    return [...groups.values()].sort((a, b) => b.ms - a.ms)
  }
}

/**
 * Creates `matview_bench_<random>` on the server and connects to it. `close()` drops it
 * (unless `keep`), also when a phase failed.
 */
export async function openPostgres(serverUrl, { keep = false } = {}) {
  const admin = new pg.Client({ connectionString: serverUrl, application_name: 'matview-bench' })
  await admin.connect()
  const name = `matview_bench_${randomBytes(4).toString('hex')}`
  await admin.query(`CREATE DATABASE ${ident(name)}`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const client = new pg.Client({ connectionString: url.href, application_name: 'matview-bench' })
  let dropped = false
  const drop = async () => {
    if (dropped) return
    dropped = true
    await client.end().catch(() => {})
    if (keep) return
    await admin.query(`DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`)
  }
  try {
    await client.connect()
  } catch (error) {
    await drop().catch(() => {})
    await admin.end()
    throw error
  }
  const statements = new StatementLog()
  return {
    dialect: 'postgres',
    database: name,
    url: url.href,
    statements,
    async exec(text, params = []) {
      const result = await client.query(text, params)
      return { rows: result.rows, count: result.rowCount ?? 0 }
    },
    /** Opens matview on its own pool, with the statement log attached. */
    async openMatview(config) {
      // The planner settings matview gives its own connections (src/dialects/connect.ts).
      const pool = new pg.Pool({
        connectionString: url.href,
        max: 10,
        application_name: 'matview',
        options: '-c random_page_cost=2 -c jit=off',
      })
      pool.on('error', () => {})
      const db = new Kysely({ dialect: new PostgresDialect({ pool }), log: statements.log })
      const mv = await Matview.open({ ...config, database: db }).catch(async (error) => {
        await db.destroy()
        throw error
      })
      return wrapMatview(mv, () => db.destroy())
    },
    /** Drops the database; safe to call twice, and from a signal handler. */
    async close() {
      try {
        await drop()
      } finally {
        await admin.end().catch(() => {})
      }
    },
  }
}

/** An in-memory PGlite; matview and the benchmark share its one connection, one at a time. */
export async function openPglite() {
  const { PGlite } = await import('@electric-sql/pglite')
  const db = await PGlite.create()
  return {
    dialect: 'pglite',
    database: 'pglite:memory',
    statements: undefined,
    async exec(text, params = []) {
      const result = await db.query(text, params)
      return { rows: result.rows, count: result.affectedRows ?? 0 }
    },
    async openMatview(config) {
      return wrapMatview(await Matview.open({ ...config, database: db }), async () => {})
    },
    async close() {
      await db.close()
    },
  }
}

/** A Matview whose `update` throws unless every view finished (`done`). */
function wrapMatview(mv, release) {
  return {
    mv,
    async update(options = {}) {
      const summary = await mv.update(options)
      for (const result of summary.views) {
        if (result.outcome !== 'done') {
          throw new Error(
            `matview update of "${result.view}" ended ${result.outcome}: ${result.error ?? result.reason ?? ''}`,
            { cause: result.cause },
          )
        }
      }
      return summary
    },
    async close() {
      try {
        await mv.close()
      } finally {
        await release()
      }
    },
  }
}
