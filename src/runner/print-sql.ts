import {
  type CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  sql,
} from 'kysely'
import {
  createCatalogSchema,
  migrationRecord,
  readCatalogVersion,
} from '../catalog/ensure-catalog.js'
import { CATALOG_VERSION, MIGRATIONS } from '../catalog/migrations.js'
import { readViewRows } from '../catalog/view-rows.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import { createView } from '../engine/create-view.js'
import { recordDdl } from '../engine/ddl-sink.js'
import { setSourceLockTimeout } from '../engine/source-ddl.js'
import { CatalogVersionError, UsageError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { selectViews } from './update.js'

/** Thrown to roll back the transaction the statements were tried in. */
const ROLLBACK = Symbol('rollback')

/**
 * The DDL `create` would run for declarative views not created yet (all of them when `names`
 * is empty), as a commented SQL script, for teams that apply schema through their own
 * migration tool: the catalog's migrations this database lacks, then per view its catalog rows,
 * target, primary key, indexes, change log, stages, capture functions and triggers.
 *
 * Every statement is run, in dependency order, in one transaction that is then rolled back, so
 * the script is known to work on this database (a view that reads another new view's table
 * too) and nothing is left behind; it holds, briefly, the locks that CREATE TRIGGER takes on
 * the sources, waiting at most 400 ms for each. The views' objects are named by their catalog ids: the script sets the next
 * free ids, so it is meant for this database, applied before another view is created. `create`
 * then checks each object against the definition before it backfills.
 */
export async function printViewSql(
  database: Database,
  config: ResolvedConfig,
  names: string[],
): Promise<string> {
  const views = chooseViews(config, names)
  const schema = config.schema
  const out: string[] = []
  try {
    await database.db.transaction().execute(async (trx) => {
      // Never queue behind a long transaction on a source (writers would queue behind us),
      // and give up a wait before an application's deadlock check could pick it as the victim
      // (this transaction holds the sources it has tried the triggers on until it rolls back).
      await setSourceLockTimeout(trx)
      const version = await readCatalogVersion(trx, schema)
      if (version > CATALOG_VERSION) throw new CatalogVersionError(schema, version, CATALOG_VERSION)
      const existing = version > 0 ? await readViewRows(trx, schema) : new Map()
      const wanted = views.filter((v) => !existing.has(v.name))
      const created = views.filter((v) => existing.has(v.name))
      out.push(...header(database, schema, wanted, version))
      for (const view of created)
        out.push(`-- View ${view.name}: already in the catalog; nothing to print for it.`, '')
      if (wanted.length === 0) return
      if (version < CATALOG_VERSION) out.push(...(await catalogScript(trx, schema, version)))
      let id = await nextViewId(trx, schema, version)
      for (const view of wanted) {
        const ddl = recordDdl()
        await createView(trx, schema, view, { ddl, id })
        out.push(`-- View ${view.name} (catalog id ${id}) ${'-'.repeat(40)}`, '')
        for (const statement of ddl.statements) {
          if (statement.comment) out.push(`-- ${statement.comment}`)
          out.push(`${statement.text.trim()};`, '')
        }
        id++
      }
      out.push(
        `-- Next: "matview create" checks these objects against the definitions, then backfills.`,
      )
      throw ROLLBACK
    })
  } catch (error) {
    if (error !== ROLLBACK) throw error
  }
  return `${out.join('\n').trimEnd()}\n`
}

function chooseViews(config: ResolvedConfig, names: string[]): DeclarativeView[] {
  const selected = selectViews(config.views, names.length > 0 ? names : undefined)
  for (const view of selected) {
    if (names.length > 0 && view.kind !== 'declarative') {
      throw new UsageError(
        `view "${view.name}" is hand-written; matview sql prints the DDL of declarative views (defineView), a hand-written view's table is yours`,
      )
    }
  }
  return selected.filter((v): v is DeclarativeView => v.kind === 'declarative')
}

function header(database: Database, schema: string, views: DeclarativeView[], version: number) {
  if (views.length === 0) {
    return [
      `-- matview sql: every view asked for is already created in ${database.description}; nothing to print.`,
      '',
    ]
  }
  return [
    `-- matview sql: the DDL "matview create" runs for ${views.map((v) => v.name).join(', ')}`,
    `-- on ${database.description}, catalog schema "${schema}" ${version === 0 ? '(not created yet)' : `at version ${version}`}.`,
    '--',
    '-- Apply it in one transaction (migration tools do), to this database and before any other',
    '-- view is created: the objects are named by the catalog ids chosen here (log_<id>, …).',
    '-- Then run "matview create" (or "update"): it checks the objects against the definitions,',
    '-- refuses them naming what differs, and otherwise fills the tables.',
    '',
  ]
}

/** The catalog schema and the migrations it lacks, as `ensureCatalog` runs them. */
async function catalogScript(trx: Kysely<any>, schema: string, version: number) {
  const lines = [
    `-- The catalog schema "${schema}": migrations ${version + 1} to ${CATALOG_VERSION}`,
    '',
  ]
  const recorder = recordingKysely()
  await createCatalogSchema(recorder.db, schema)
  await createCatalogSchema(trx, schema)
  for (const migration of MIGRATIONS) {
    if (migration.version <= version) continue
    recorder.statements.push(`-- Migration ${migration.version}: ${migration.description}`)
    await migration.up(recorder.db, schema)
    await migrationRecord(schema, migration, (v) => sql.lit(v)).execute(recorder.db)
    await migration.up(trx, schema)
    await migrationRecord(schema, migration).execute(trx)
  }
  for (const statement of recorder.statements)
    lines.push(statement.startsWith('--') ? statement : `${dedent(statement)};`, '')
  return lines
}

/** The next id the views' id sequence gives, read without taking it. */
async function nextViewId(trx: Kysely<any>, schema: string, version: number): Promise<number> {
  if (version === 0) return 1
  const { rows } = await sql<{ id: string }>`
    SELECT greatest(
      (SELECT max(greatest(id, rebuild_id)) FROM ${sql.id(schema)}.views),
      (SELECT last_value FROM pg_catalog.pg_sequences
       WHERE schemaname = ${schema} AND sequencename = 'views_id_seq'),
      0) + 1 AS id`.execute(trx)
  return Number(rows[0]!.id)
}

/**
 * A Kysely that runs nothing and keeps the SQL of each statement it is asked to run: the
 * migrations' text, exactly as `ensureCatalog` sends it.
 */
function recordingKysely(): { db: Kysely<any>; statements: string[] } {
  const statements: string[] = []
  const connection: DatabaseConnection = {
    async executeQuery<R>(query: CompiledQuery) {
      if (query.parameters.length > 0)
        throw new Error('internal: a catalog migration to print carries bind parameters')
      statements.push(query.sql)
      return { rows: [] as R[] }
    },
    // biome-ignore lint/correctness/useYield: never streams
    async *streamQuery() {
      throw new Error('internal: not supported')
    },
  }
  const driver: Driver = {
    async init() {},
    async acquireConnection() {
      return connection
    },
    async beginTransaction() {},
    async commitTransaction() {},
    async rollbackTransaction() {},
    async releaseConnection() {},
    async destroy() {},
  }
  const db = new Kysely<any>({
    dialect: {
      createAdapter: () => new PostgresAdapter(),
      createDriver: () => driver,
      createIntrospector: (db) => new PostgresIntrospector(db),
      createQueryCompiler: () => new PostgresQueryCompiler(),
    },
  })
  return { db, statements }
}

/** Removes the indentation the statements have in the source code. */
function dedent(text: string): string {
  const lines = text.replace(/^\n+/, '').trimEnd().split('\n')
  const indent = Math.min(
    ...lines.filter((l) => l.trim()).map((l) => l.length - l.trimStart().length),
  )
  return lines.map((l) => l.slice(indent)).join('\n')
}
