import { type Kysely, type RawBuilder, sql } from 'kysely'
import { ViewDefinitionError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { createCapture } from './capture-ddl.js'
import { refuseCrossKey } from './check-key-local.js'
import { type DdlSink, executeDdl } from './ddl-sink.js'
import {
  type Column,
  columnsOf,
  type FoundTable,
  findTable,
  inspectQuery,
  requireColumns,
  tableLabel,
} from './inspect-definition.js'
import { requireTriggerRights } from './install-capture.js'
import { unsafeKeyConversion } from './key-conversion.js'
import { nullKeyError } from './key-error.js'
import { columnList, parseTableName, type QualifiedTable, tableRef, viewObjects } from './names.js'
import { postgresError } from './postgres-errors.js'
import { sourceTree } from './source-tree.js'
import { mappingQuery, viewQuery } from './view-runtime.js'
import { definitionHash, isQueryMapping, sourceNames, viewPartitions } from './view-sql.js'

/**
 * What a view's catalog row says when `matview sql` printed its DDL: `create` checks the
 * objects against its definition before it backfills (see `check-printed-objects.ts`).
 */
export const PRINTED_STATE_REASON =
  'created from the output of "matview sql"; create checks the objects, then backfills'

/**
 * Creates everything a declarative view needs, in the caller's transaction: catalog row, target
 * (columns and types from the query, primary key on the key, declared indexes), change log and
 * staging tables. Every check runs before the first object exists, and a failure rolls the
 * whole transaction back: nothing is left half-created. The target starts empty in state
 * `building`; the caller then installs the capture (`installCapture`, one source per
 * transaction) and the backfill fills it.
 *
 * `printed` makes the statements for `matview sql`: the id is the one given (a placeholder the
 * script replaces with the next id of the database it is applied to), sources are found by name
 * rather than oid, values are literals, and the row says the objects still have to be checked.
 */
export async function createView(
  trx: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  printed?: { ddl: DdlSink; id: number },
): Promise<void> {
  const ddl = printed?.ddl ?? executeDdl
  const v = ddl.value
  const checked = await checkDefinition(trx, catalog, view)
  // Printed, the script runs CREATE TRIGGER in its one transaction, which says it.
  if (!printed) await requireTriggerRights(trx, view.name, 'creating the view', checked.sources)
  const views = sql.id(catalog, 'views')
  const columns = sql.join([
    sql`name`,
    sql`kind`,
    sql`definition_hash`,
    sql`state`,
    sql`state_reason`,
    sql`target_schema`,
    sql`target_table`,
    sql`key_columns`,
    sql`columns`,
    sql`partitions`,
  ])
  const values = sql.join([
    v(view.name),
    sql`'declarative'`,
    v(checked.hash),
    sql`'building'`,
    printed ? v(PRINTED_STATE_REASON) : sql`NULL`,
    v(checked.target.schema),
    v(checked.target.table),
    sql`${v(JSON.stringify(view.key))}::jsonb`,
    sql`${v(JSON.stringify(checked.columns))}::jsonb`,
    v(viewPartitions(view)),
  ])
  let id: number
  if (printed) {
    id = printed.id
    await ddl.run(trx, {
      comment: `The catalog row, with the id that names the view's objects below (state building: create checks them, then backfills)`,
      sql: sql`
INSERT INTO ${views} (id, ${columns})
VALUES (${v(id)}, ${values})`,
    })
  } else {
    // Catalog row first, for the id that names the view's own objects.
    const { rows } = await sql<{ id: number }>`
      INSERT INTO ${views} (${columns}) VALUES (${values}) RETURNING id`.execute(trx)
    id = Number(rows[0]!.id)
  }
  // Executed, the capture triggers come after this transaction, a source at a time
  // (install-capture.ts); printed, the script holds everything.
  const sources = await createViewObjects(
    trx,
    catalog,
    view,
    checked,
    { id, target: checked.target, capture: printed ? 'now' : 'later' },
    ddl,
  )
  for (const source of sources) {
    // Printed, a source is named, not given by oid: oids differ between databases. Its
    // descendants are left unrecorded (NULL): the first run's schema check records them.
    const oid = printed
      ? sql`${v(`${quoteIdent(source.schema)}.${quoteIdent(source.table)}`)}::regclass::oid`
      : sql`${source.oid}::int8::oid`
    const descendants = printed ? sql`NULL` : sql`${`{${source.descendants.join(',')}}`}::oid[]`
    const mapped =
      source.mappedColumns === null
        ? sql`NULL`
        : sql`${v(JSON.stringify(source.mappedColumns))}::jsonb`
    await ddl.run(trx, {
      comment: `Source ${source.position}: ${source.schema}.${source.table}`,
      sql: sql`
INSERT INTO ${sql.id(catalog, 'view_sources')} (view, position, source_oid, source_schema, source_table, mapping, descendants, mapped_columns)
VALUES (${v(view.name)}, ${v(source.position)}, ${oid}, ${v(source.schema)}, ${v(source.table)}, ${v(source.mapping)}, ${descendants}, ${mapped})`,
    })
  }
}

/** An identifier quoted as PostgreSQL quotes it, for the text of a regclass literal. */
function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

/** What the checks learnt about a definition: everything its objects are made from. */
export interface CheckedDefinition {
  hash: string
  query: RawBuilder<unknown>
  /** Where the target goes: resolved from the view's name, or the one the caller gave. */
  target: QualifiedTable
  /** The query's result columns, in order. */
  columns: string[]
  /** Source names in position order, and the tables they name. */
  /** The same, with their types. */
  columnTypes: Column[]
  names: string[]
  sources: FoundTable[]
  sourceColumns: Map<string, Column[]>
}

/** One source of a created view, as `view_sources` records it. */
export interface SourceRecord {
  position: number
  oid: string
  schema: string
  table: string
  mapping: 'columns' | 'query'
  /** Its partitions and inheritance children (oids), which carry its capture too. */
  descendants: string[]
  /** The source columns a column map reads the key from, with their types; null for a query. */
  mappedColumns: Column[] | null
}

/**
 * Checks a definition against the database and creates nothing lasting (a probe view in
 * pg_temp, dropped again). `existingTarget` is the table a rebuild replaces: it skips resolving
 * the view's name to a table that must not exist yet.
 */
export async function checkDefinition(
  trx: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  options: { existingTarget?: QualifiedTable } = {},
): Promise<CheckedDefinition> {
  const hash = definitionHash(trx, view)
  const query = viewQuery(trx, view)
  const fail = (message: string): never => {
    throw new ViewDefinitionError(view.name, message)
  }

  // Checks: the key, the sources, what the query reads and returns.
  if (new Set(view.key).size !== view.key.length)
    fail(`key names a column twice: ${view.key.join(', ')}`)
  const target = options.existingTarget ?? (await resolveTarget(trx, catalog, view))
  // Sources first: a query over a table that does not exist would otherwise only say
  // "relation does not exist", without naming it as the source to create or correct.
  const names = sourceNames(view)
  const sources: FoundTable[] = []
  for (const name of names) {
    const found = await findTable(trx, name)
    if (!found) {
      // Names are matched as written; `Orders` for a table created unquoted is a common slip.
      const folded =
        name.toLowerCase() !== name ? await findTable(trx, name.toLowerCase()) : undefined
      fail(
        `source table "${name}" does not exist; create it first or fix the name${folded ? ` (did you mean "${name.toLowerCase()}"? names are matched exactly as written)` : ''}`,
      )
    }
    if (!['r', 'p'].includes(found!.kind))
      fail(`source "${name}" is not a table (matview captures changes on tables)`)
    sources.push(found!)
  }
  const shape = await inspectQuery(trx, view.name, 'the query', query)
  requireColumns(
    view.name,
    view.key,
    shape.columns,
    (c) => `key column "${c}" is not a column of the query's result`,
  )
  for (const k of view.key) {
    const type = shape.columns.find((c) => c.name === k)!.type
    // The capture appends each statement's keys as one array per key column (capture-ddl.ts):
    // array_agg of an array key would make a two-dimensional array, or fail the writer's
    // statement when two keys differ in length.
    if (type.endsWith('[]'))
      fail(
        `key column "${k}" is an array (${type}); key the view by scalar columns (unnest the array in the query)`,
      )
  }
  for (const index of view.indexes ?? []) {
    requireColumns(
      view.name,
      index,
      shape.columns,
      (c) => `index column "${c}" is not a column of the query's result`,
    )
  }
  for (const [i, source] of sources.entries()) {
    if (!shape.tables.some((t) => t.oid === source.oid)) {
      fail(`source "${names[i]}" is not read by the query; remove it from sources`)
    }
  }
  for (const table of shape.tables) {
    if (!sources.some((s) => s.oid === table.oid)) {
      fail(
        `the query reads ${tableLabel(table)}, which is not in sources; add it with its key mapping, or its changes will never reach the view`,
      )
    }
  }
  const sourceColumns = new Map<string, Column[]>()
  for (const [i, source] of sources.entries()) {
    const columns = await columnsOf(trx, source.oid)
    sourceColumns.set(source.oid, columns)
    const mapping = view.sources[names[i]!]!
    if (isQueryMapping(mapping)) continue
    for (const keyColumn of view.key) {
      if (!(keyColumn in mapping))
        fail(
          `source "${names[i]}" maps no column to key column "${keyColumn}"; map every key column, or map the source with a SQL query over "changed" that returns the key`,
        )
    }
    for (const [keyColumn, sourceColumn] of Object.entries(mapping)) {
      if (!view.key.includes(keyColumn)) {
        fail(
          `source "${names[i]}" maps "${keyColumn}", which is not a key column (key: ${view.key.join(', ')})`,
        )
      }
      requireColumns(
        view.name,
        [sourceColumn],
        columns,
        (c) =>
          `source "${names[i]}" maps key column "${keyColumn}" to column "${c}", which ${tableLabel(source)} does not have`,
      )
      const keyType = shape.columns.find((c) => c.name === keyColumn)!.type
      const unsafe = await unsafeKeyConversion(trx, source.oid, sourceColumn, keyType)
      if (unsafe && !unsafe.cast)
        fail(
          `source "${names[i]}" cannot feed the key from "${sourceColumn}": PostgreSQL has no implicit or assignment cast from ${unsafe.source} to ${keyType} (key column "${keyColumn}"); map a column of the key's type, or map the source with a SQL query over "changed" that returns the key`,
        )
      if (unsafe)
        fail(
          `source "${names[i]}" maps key column "${keyColumn}" to column "${sourceColumn}": ${unsafe.reason}; map a column of the key's type (${keyType}), or map the source with a SQL query over "changed" that computes the key as the query does`,
        )
    }
  }
  for (const [i, source] of sources.entries()) {
    await requireCapturableParents(view.name, trx, names[i]!, source, view, sourceColumns)
  }
  // Last of the checks on the definition's text: a view kept by key must be key-local.
  await refuseCrossKey(trx, view)
  await requireUsableKey(trx, view, query)
  return {
    hash,
    query,
    target,
    columns: shape.columns.map((c) => c.name),
    columnTypes: shape.columns,
    names,
    sources,
    sourceColumns,
  }
}

/**
 * A source that is an inheritance child is written through its parents too (`UPDATE parent`
 * changes the child's rows), and the capture on a parent sees those rows in the parent's row
 * type: a parent must have every column the capture reads (the mapped columns, or for a
 * query-mapped source all of them), or its statements could not be captured. Partitions
 * always have their parent's columns.
 */
async function requireCapturableParents(
  viewName: string,
  trx: Kysely<any>,
  name: string,
  source: FoundTable,
  view: DeclarativeView,
  sourceColumns: Map<string, Column[]>,
): Promise<void> {
  const { ancestors } = await sourceTree(trx, source.oid)
  const mapping = view.sources[name]!
  const needed = isQueryMapping(mapping)
    ? (sourceColumns.get(source.oid) ?? []).map((c) => c.name)
    : Object.values(mapping)
  for (const parent of ancestors) {
    const have = new Set((await columnsOf(trx, parent.oid)).map((c) => c.name))
    const missing = needed.filter((c) => !have.has(c))
    if (missing.length > 0) {
      throw new ViewDefinitionError(
        viewName,
        `source "${name}" inherits from ${tableLabel(parent)}, which lacks its column${missing.length > 1 ? 's' : ''} ${missing.map((c) => `"${c}"`).join(', ')}: writes naming ${tableLabel(parent)} change its rows but could not be captured; make ${tableLabel(parent)} the source (filter by tableoid in the query) or give it the columns`,
      )
    }
  }
}

/**
 * Creates a checked view's objects, in the caller's transaction: the target table `at.target`
 * (empty), its primary key and indexes, and the change log, staging tables and capture triggers
 * named by `at.id`. Returns the sources for the caller to record. A rebuild calls it with a
 * shadow table and a new id, so the live view's objects are never touched.
 *
 * `capture: 'later'` leaves out the capture functions and triggers: the caller commits, then
 * installs them one source per transaction (`installCapture`), so this transaction locks no
 * source in a mode that writers wait for, and never holds one source while it waits for another.
 */
export async function createViewObjects(
  trx: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  checked: CheckedDefinition,
  at: { id: number; target: QualifiedTable; capture: 'now' | 'later' },
  ddl: DdlSink = executeDdl,
): Promise<SourceRecord[]> {
  const fail = (message: string): never => {
    throw new ViewDefinitionError(view.name, message)
  }
  const { query, names, sources } = checked
  const target = at.target
  const objects = viewObjects(catalog, at.id)
  const keyList = columnList(view.key)
  const types = checked.columnTypes.map((c) => `${c.name} ${c.type}`).join(', ')

  await ddl.run(trx, {
    comment: `The target, empty, with the query's columns and types (${types}); the backfill fills it`,
    sql: sql`CREATE TABLE ${tableRef(target)} AS SELECT * FROM (${query}) AS q WITH NO DATA`,
  })
  await ddl.run(trx, {
    comment: 'Its primary key: the view key',
    sql: sql`ALTER TABLE ${tableRef(target)} ADD PRIMARY KEY (${keyList})`,
  })
  for (const index of view.indexes ?? []) {
    await ddl.run(trx, {
      comment: `An index the definition declares`,
      sql: sql`CREATE INDEX ON ${tableRef(target)} (${columnList(index)})`,
    })
  }
  const partitions = viewPartitions(view)
  if (partitions === 1) {
    await ddl.run(trx, {
      comment: 'The change log: keys moved from the inbox, claimed by each batch',
      sql: sql`CREATE TABLE ${tableRef(objects.log)} AS SELECT ${keyList} FROM ${tableRef(target)} WITH NO DATA`,
    })
    await ddl.run(trx, {
      comment: '',
      sql: sql`ALTER TABLE ${tableRef(objects.log)} ADD COLUMN matview_logged_at timestamptz NOT NULL DEFAULT now()`,
    })
  } else {
    await createPartitionedLog(trx, view, checked, objects, partitions, ddl)
  }
  await ddl.run(trx, {
    // Claims read distinct keys in key order and delete by key: both use this index.
    comment: 'Batches claim keys in key order and delete them by key: both use this index',
    sql: sql`CREATE INDEX ON ${tableRef(objects.log)} (${keyList})`,
  })
  await createInbox(trx, view, checked, objects, ddl)

  const records: SourceRecord[] = []
  for (const [position, source] of sources.entries()) {
    const name = names[position]!
    const mapping = view.sources[name]!
    const record = {
      position,
      oid: source.oid,
      schema: source.schema,
      table: source.table,
      mapping: isQueryMapping(mapping) ? ('query' as const) : ('columns' as const),
    }
    if (isQueryMapping(mapping)) {
      const stage = objects.stage(position)
      await createStage(trx, stage, ddl)
      const mapped = await inspectQuery(
        trx,
        view.name,
        `the mapping of source "${name}"`,
        sql`WITH changed AS (SELECT * FROM ${tableRef(source)} LIMIT 0) SELECT * FROM (${mappingQuery(trx, view, name)}) AS m`,
      )
      requireColumns(
        view.name,
        view.key,
        mapped.columns,
        (c) => `the mapping of source "${name}" does not return key column "${c}"`,
      )
      if (at.capture === 'now') {
        await createCapture(trx, objects, catalog, position, source, { kind: 'query', stage }, ddl)
      }
      records.push({
        ...record,
        descendants: await descendantOids(trx, source.oid),
        mappedColumns: null,
      })
    } else {
      const mapped = view.key.map((k) => mapping[k]!)
      // Plans an INSERT of the source's columns as keys once (into the log, whose columns have
      // the key's types), so a source column that cannot become the key's type fails now.
      await sql`INSERT INTO ${tableRef(objects.log)} (${keyList}) SELECT ${columnList(mapped)} FROM ${tableRef(source)} LIMIT 0`
        .execute(trx)
        .catch((error) => {
          const pgError = postgresError(error)
          if (!pgError) throw error
          fail(
            `source "${name}" cannot feed the key from ${mapped.map((c) => `"${c}"`).join(', ')}: ${pgError.message}`,
          )
        })
      if (at.capture === 'now') {
        await createCapture(
          trx,
          objects,
          catalog,
          position,
          source,
          { kind: 'columns', log: objects.inbox, keyColumns: view.key, sourceColumns: mapped },
          ddl,
        )
      }
      // What the capture reads by name: the schema watch stops it when one is renamed,
      // dropped or retyped, before the application's writes would fail on it.
      const columns = checked.sourceColumns.get(source.oid) ?? []
      const mappedColumns = mapped.map((name) => columns.find((c) => c.name === name)!)
      records.push({ ...record, descendants: await descendantOids(trx, source.oid), mappedColumns })
    }
  }
  return records
}

/**
 * A change log split into `partitions` hash partitions of the key: the inbox's move and the
 * staged rows' mapping insert into the parent, which routes each key to its partition, and
 * each partition is claimed and applied on its own, under its own lock. A partitioned table
 * cannot be made by `CREATE TABLE AS`.
 */
async function createPartitionedLog(
  trx: Kysely<any>,
  view: DeclarativeView,
  checked: CheckedDefinition,
  objects: ReturnType<typeof viewObjects>,
  partitions: number,
  ddl: DdlSink,
): Promise<void> {
  await ddl.run(trx, {
    comment: `The change log, split by a hash of the key into ${partitions} partitions: keys moved from the inbox, claimed partition by partition`,
    sql: sql`
CREATE TABLE ${tableRef(objects.log)} (
  ${keyColumnDefinitions(view, checked, '')},
  matview_logged_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY HASH (${columnList(view.key)})`,
  })
  for (let k = 0; k < partitions; k++) {
    await ddl.run(trx, {
      comment: k === 0 ? 'Its partitions' : '',
      sql: sql`CREATE TABLE ${tableRef(objects.logPartition(k))} PARTITION OF ${tableRef(objects.log)} FOR VALUES WITH (MODULUS ${sql.lit(partitions)}, REMAINDER ${sql.lit(k)})`,
    })
  }
}

/**
 * `key_column type<suffix>, …`, with the types PostgreSQL gives the query's key columns
 * (`format_type`, which quotes what needs it): a table that is not made by `CREATE TABLE AS`.
 */
function keyColumnDefinitions(
  view: DeclarativeView,
  checked: CheckedDefinition,
  suffix: '' | '[] NOT NULL',
): RawBuilder<unknown> {
  return sql.join(
    view.key.map((k) => {
      const type = checked.columnTypes.find((c) => c.name === k)!.type
      // DDL: a type cannot be a parameter; the text is PostgreSQL's own format_type output.
      return sql`${sql.id(k)} ${sql.raw(`${type}${suffix}`)}`
    }),
  )
}

/**
 * The inbox: what the capture triggers append to, one row per statement with the statement's
 * keys as one array per key column (see capture-ddl.ts). No index, and the arrays are stored
 * out of line uncompressed: a writer pays one small heap insert and no compression; each claim
 * moves the rows into the log. Its types are the key's types, as `format_type` gives them.
 */
async function createInbox(
  trx: Kysely<any>,
  view: DeclarativeView,
  checked: CheckedDefinition,
  objects: ReturnType<typeof viewObjects>,
  ddl: DdlSink,
): Promise<void> {
  await ddl.run(trx, {
    comment:
      "The inbox: the capture triggers append each statement's keys here as arrays, unindexed; each claim moves them into the log",
    sql: sql`
CREATE TABLE ${tableRef(objects.inbox)} (
  ${keyColumnDefinitions(view, checked, '[] NOT NULL')},
  matview_logged_at timestamptz NOT NULL DEFAULT now()
)`,
  })
  for (const k of view.key) {
    await ddl.run(trx, {
      comment: '',
      sql: sql`ALTER TABLE ${tableRef(objects.inbox)} ALTER COLUMN ${sql.id(k)} SET STORAGE EXTERNAL`,
    })
  }
}

/**
 * A staging table: changed rows of a source mapped by a query, as jsonb (see capture-ddl.ts).
 * Its capture runs as the writer (SECURITY INVOKER), so every role may INSERT into it (and look
 * it up in the catalog schema); only matview's role reads it. A row staged by anyone else is
 * only mapped to keys that are recomputed from the query: it cannot change what a view holds.
 */
export async function createStage(
  trx: Kysely<any>,
  stage: QualifiedTable,
  ddl: DdlSink = executeDdl,
): Promise<void> {
  await ddl.run(trx, {
    comment: 'A stage: changed rows of a source mapped by a query, mapped when a batch claims them',
    sql: sql`
CREATE TABLE ${tableRef(stage)} (
  row jsonb NOT NULL,
  matview_logged_at timestamptz NOT NULL DEFAULT now()
)`,
  })
  await ddl.run(trx, {
    comment: 'Writers stage rows with their own rights: INSERT for every role, no SELECT',
    sql: sql`GRANT INSERT ON ${tableRef(stage)} TO PUBLIC`,
  })
  await ddl.run(trx, {
    comment: '',
    sql: sql`GRANT USAGE ON SCHEMA ${sql.id(stage.schema)} TO PUBLIC`,
  })
}

/** The target's schema and table; refuses a name taken by a table matview did not create. */
async function resolveTarget(
  trx: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
): Promise<QualifiedTable> {
  const parsed = parseTableName(view.name)
  // `kept`: the names as PostgreSQL stores them (cut to NAMEDATALEN - 1 bytes).
  const { rows } = await sql<{
    schema: string | null
    kept_schema: string | null
    kept: string
    limit: string
  }>`
    SELECT CASE WHEN ${parsed.schema ?? null}::text IS NULL THEN pg_catalog.current_schema()
           ELSE (SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ${parsed.schema ?? null}::text)
           END AS schema,
           ${parsed.schema ?? null}::text::name::text AS kept_schema,
           ${parsed.table}::text::name::text AS kept,
           pg_catalog.current_setting('max_identifier_length') AS limit`.execute(trx)
  // A longer name would be cut silently: the target would get another name than the view's,
  // the clash check below would miss a table of that name, and two long names could collide.
  for (const [part, kept] of [
    [parsed.schema, rows[0]?.kept_schema],
    [parsed.table, rows[0]?.kept],
  ] as const) {
    if (part !== undefined && kept !== part) {
      throw new ViewDefinitionError(
        view.name,
        `"${part}" is ${Buffer.byteLength(part)} bytes long, longer than PostgreSQL's limit of ${rows[0]?.limit} bytes for a name, which would cut it to "${kept}"; choose a shorter name`,
      )
    }
  }
  const schema = rows[0]?.schema
  if (!schema) {
    throw new ViewDefinitionError(
      view.name,
      parsed.schema
        ? `schema "${parsed.schema}" does not exist; create it first`
        : 'no schema to create the target in (the search_path names none that exists)',
    )
  }
  // The catalog schema holds the views' own objects (log_ID, stage_ID_N): a target there
  // could take the name of one made later.
  if (schema === catalog) {
    throw new ViewDefinitionError(
      view.name,
      `schema "${catalog}" is matview's catalog; create the view in another schema`,
    )
  }
  const target = { schema, table: parsed.table }
  const existing = await findTable(trx, `${schema}.${parsed.table}`)
  if (existing) {
    throw new ViewDefinitionError(
      view.name,
      `a table named "${schema}.${parsed.table}" already exists and matview did not create it; drop or rename it, or give the view another name`,
    )
  }
  return target
}

/**
 * A NULL key cannot be stored (the key is the target's primary key): say so now, naming the
 * column. `key IS NULL … LIMIT 1` is pushed down to the base tables like any key qual, so the
 * check costs little. A duplicate key is found by the backfill (which then discards the view:
 * nothing is kept) or by a batch, both naming the value: looking for it here would compute the
 * whole query once more before the backfill computes it again.
 */
async function requireUsableKey(
  trx: Kysely<any>,
  view: DeclarativeView,
  query: ReturnType<typeof viewQuery>,
): Promise<void> {
  const anyNull = sql.join(
    view.key.map((k) => sql`q.${sql.id(k)} IS NULL`),
    sql` OR `,
  )
  const nullFlags = sql.join(
    view.key.map((k, i) => sql`q.${sql.id(k)} IS NULL AS ${sql.id(`null_${i}`)}`),
  )
  const { rows } = await sql<Record<string, unknown>>`
    SELECT ${nullFlags} FROM (${query}) AS q WHERE ${anyNull} LIMIT 1`
    .execute(trx)
    .catch((error) => {
      const pgError = postgresError(error)
      if (!pgError) throw error
      throw new ViewDefinitionError(view.name, `the query fails when run: ${pgError.message}`, {
        cause: error,
      })
    })
  const row = rows[0]
  if (!row) return
  const nullColumn = view.key.find((_, i) => row[`null_${i}`] === true)!
  throw nullKeyError(view, nullColumn)
}

/**
 * The partitions and inheritance children of a source, as the catalog records them: the capture
 * goes on each (installed now or by `installCapture`), and the schema watch compares them with
 * the tree as it is at each run.
 */
async function descendantOids(trx: Kysely<any>, oid: string): Promise<string[]> {
  return (await sourceTree(trx, oid)).descendants.map((t) => t.oid)
}
