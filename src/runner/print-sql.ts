import {
  type CompiledQuery,
  type DatabaseConnection,
  type Driver,
  Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type RawBuilder,
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
import { isQueryMapping } from '../engine/view-sql.js'
import { CatalogVersionError, UsageError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { selectViews } from './update.js'

/** Thrown to roll back the transaction the statements were tried in. */
const ROLLBACK = Symbol('rollback')

/**
 * The ids the views' objects are recorded with (one per view, counting down from this), each
 * replaced in the script by the next id of the database it is applied to: numbers no
 * definition is expected to hold (checked).
 */
const FIRST_PLACEHOLDER = 1_999_999_999

/**
 * The DDL `create` would run for declarative views not created yet (all of them when `names`
 * is empty), as a commented SQL script, for teams that apply schema through their own
 * migration tool: the catalog's migrations, then per view its catalog rows, target, primary
 * key, indexes, change log, stages, capture functions and triggers.
 *
 * The script applies to any database, not only this one: each catalog migration runs only
 * where the catalog lacks it (under the migration lock), and each view's objects are created by
 * a DO block that takes the next id of that database's catalog and names the objects by it
 * (a view already in that catalog is skipped). Every statement is first run here, in dependency
 * order, in one transaction that is then rolled back, so it is known to work (a view that reads
 * another new view's table too); it holds, briefly, the locks CREATE TRIGGER takes on the
 * sources, waiting at most 400 ms for each. `create` then checks each object against the definition before it backfills.
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
      out.push(...header(database, schema, wanted))
      for (const view of created)
        out.push(
          comment(`View ${view.name}: already in the catalog here; nothing to print for it.`),
          '',
        )
      if (wanted.length === 0) return
      out.push(...(await catalogScript(trx, schema, version)))
      const taken = new Set<number>()
      for (const view of wanted) {
        const placeholder = placeholderFor(trx, view, taken)
        const ddl = recordDdl()
        await createView(trx, schema, view, { ddl, id: placeholder })
        out.push(comment(`View ${view.name} ${'-'.repeat(40)}`), '')
        out.push(viewBlock(trx, schema, view, placeholder, ddl.statements), '')
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

/** A placeholder id not taken yet that appears nowhere in the view's own text. */
function placeholderFor(trx: Kysely<any>, view: DeclarativeView, taken: Set<number>): number {
  const texts = [
    view.name,
    JSON.stringify([view.key, view.indexes ?? []]),
    view.query.compile(trx).sql,
    ...Object.entries(view.sources).map(([name, mapping]) =>
      isQueryMapping(mapping)
        ? `${name} ${mapping.compile(trx).sql}`
        : JSON.stringify([name, mapping]),
    ),
  ].join('\n')
  for (let id = FIRST_PLACEHOLDER; id > FIRST_PLACEHOLDER - 1000; id--) {
    if (taken.has(id) || texts.includes(String(id))) continue
    taken.add(id)
    return id
  }
  throw new UsageError(
    `view "${view.name}": its definition holds the numbers matview sql uses as id placeholders; create it with matview create instead`,
  )
}

/**
 * One view's DDL as a DO block: skipped where the catalog has the view already; else the next
 * id of that database's catalog replaces the placeholder in every statement, which runs as
 * recorded (EXECUTE of the text, so its own quoting is untouched).
 */
function viewBlock(
  trx: Kysely<any>,
  schema: string,
  view: DeclarativeView,
  placeholder: number,
  statements: { comment: string; text: string }[],
): string {
  const text = (query: RawBuilder<unknown>) => query.compile(trx).sql
  const body = [
    'DECLARE',
    '  view_id integer;',
    'BEGIN',
    `  IF EXISTS (SELECT 1 FROM ${text(sql`${sql.id(schema, 'views')} WHERE name = ${sql.lit(view.name)}`)}) THEN`,
    `    RAISE NOTICE 'matview: view % is already in the catalog; left as it is', ${text(sql.lit(view.name))};`,
    '    RETURN;',
    '  END IF;',
    "  -- The next id of this database's catalog names the view's objects (log_<id>, …).",
    `  view_id := nextval(pg_get_serial_sequence(${text(sql.lit(`${text(sql.id(schema))}.views`))}, 'id'));`,
  ]
  for (const statement of statements) {
    if (statement.comment)
      body.push(`  ${comment(statement.comment.replaceAll(String(placeholder), '<id>'))}`)
    body.push(
      `  EXECUTE replace(${dollarQuote(statement.text.trim())}, '${placeholder}', view_id::text);`,
    )
  }
  body.push('END')
  return doBlock(body.join('\n'))
}

/** `DO $tag$ … $tag$;` with a tag the body does not hold. */
function doBlock(body: string): string {
  return `DO ${dollarQuote(`\n${body}\n`, 'matview')};`
}

/** `text` as a dollar-quoted string literal, with a tag that does not occur in it. */
function dollarQuote(text: string, base = 'sql'): string {
  let tag = base
  for (let n = 1; text.includes(`$${tag}$`); n++) tag = `${base}${n}`
  return `$${tag}$${text}$${tag}$`
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

function header(database: Database, schema: string, views: DeclarativeView[]) {
  if (views.length === 0) {
    return [
      comment(
        `matview sql: every view asked for is already created in ${database.description}; nothing to print.`,
      ),
      '',
    ]
  }
  return [
    comment(
      `matview sql: the DDL "matview create" runs for ${views.map((v) => v.name).join(', ')}`,
    ),
    comment(
      `(printed from ${database.description}), catalog schema "${schema}", catalog version ${CATALOG_VERSION}.`,
    ),
    '--',
    '-- It applies to any database: each catalog migration runs only where the catalog lacks it,',
    "-- and each view takes the next id of that database's catalog for its objects' names (a view",
    '-- already in that catalog is skipped). Apply it in one transaction (psql -1; migration tools',
    '-- do). Then run "matview create" (or "update"): it checks the objects against the',
    '-- definitions, refuses them naming what differs, and otherwise fills the tables.',
    '',
  ]
}

/**
 * The catalog for any database: the schema and version table if absent, then every migration in
 * a DO block that runs it only where the catalog is older, under the lock `ensureCatalog` takes.
 * This transaction gets the migrations it lacks, so the views' DDL can be tried on it.
 */
async function catalogScript(trx: Kysely<any>, schema: string, version: number) {
  if (version < CATALOG_VERSION) {
    await createCatalogSchema(trx, schema)
    for (const migration of MIGRATIONS) {
      if (migration.version <= version) continue
      await migration.up(trx, schema)
      await migrationRecord(schema, migration).execute(trx)
    }
  }
  const text = (query: RawBuilder<unknown>) => query.compile(trx).sql
  const versionTable = sql.id(schema, 'catalog_version')
  const current = text(sql`(SELECT coalesce(max(version), 0) FROM ${versionTable})`)
  const recorder = recordingKysely()
  await createCatalogSchema(recorder.db, schema)
  const lines = [
    comment(
      `The catalog schema "${schema}" at version ${CATALOG_VERSION}: each migration runs only where the catalog lacks it`,
    ),
    '',
    ...recorder.statements.map((statement) => `${dedent(statement)};\n`),
    '-- Two scripts (or a script and matview) migrating at once wait for each other',
    `${text(sql`SELECT pg_advisory_xact_lock(hashtext(${sql.lit(schema)}), hashtext('matview:migrate'))`)};`,
    '',
    doBlock(
      [
        'BEGIN',
        `  IF ${current} > ${CATALOG_VERSION} THEN`,
        `    RAISE EXCEPTION 'the catalog in schema % is at version %, newer than this script (${CATALOG_VERSION}); print it again with a newer matview', ${text(sql.lit(schema))}, ${current};`,
        '  END IF;',
        'END',
      ].join('\n'),
    ),
    '',
  ]
  for (const migration of MIGRATIONS) {
    const steps = recordingKysely()
    await migration.up(steps.db, schema)
    await migrationRecord(schema, migration, (v) => sql.lit(v)).execute(steps.db)
    lines.push(
      comment(`Migration ${migration.version}: ${migration.description}`),
      doBlock(
        [
          'BEGIN',
          `  IF ${current} >= ${migration.version} THEN`,
          '    RETURN;',
          '  END IF;',
          ...steps.statements.map((statement) => `  EXECUTE ${dollarQuote(dedent(statement))};`),
          'END',
        ].join('\n'),
      ),
      '',
    )
  }
  return lines
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

/**
 * A `--` comment line of the script, whatever `text` holds: names (a view's, a column's, a
 * schema's) may contain line breaks, and PostgreSQL ends a `--` comment at a line feed or a
 * carriage return, after which the rest of the name would run as SQL. Every control character
 * and Unicode line separator is printed as an escape (`\n`, `\u2028`), so the comment is one
 * line and runs as nothing.
 */
export function comment(text: string): string {
  const escaped = text.replace(/[\p{Cc}\u2028\u2029]/gu, (c) => {
    const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }
    return named[c] ?? `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`
  })
  return `-- ${escaped}`
}
