import { type Kysely, sql } from 'kysely'
import { ViewDefinitionError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { type CaptureTarget, captureFunctionBody } from './capture-ddl.js'
import { checkDefinition } from './create-view.js'
import { type Column, columnsOf } from './inspect-definition.js'
import { displayName, type QualifiedTable, viewObjects } from './names.js'
import type { ViewRuntime } from './view-runtime.js'
import { definitionHash, isQueryMapping, viewPartitions } from './view-sql.js'

/** `pg_trigger.tgtype` bits of the AFTER … FOR EACH STATEMENT triggers matview creates. */
const EVENTS = { insert: 4, delete: 8, update: 16, truncate: 32 } as const

/**
 * Accepts the objects of a view created from `matview sql`'s script (applied by the user's
 * migration tool) only when they are what `create` makes from the definition: the catalog row
 * and its definition hash, the target's columns and types, primary key and declared indexes,
 * the change log and stages, each capture function's body and the triggers on each source.
 * The first difference fails with one line naming the object; nothing is changed. On success
 * the row no longer asks for the check, and the backfill goes on as after `create`.
 */
export async function acceptPrintedObjects(
  trx: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  runtime: ViewRuntime,
): Promise<void> {
  const fail = (message: string): never => {
    throw new ViewDefinitionError(
      view.name,
      `${message}; the objects from "matview sql" must be applied as printed (fix it, or drop the view with "matview drop ${view.name}" and apply a fresh "matview sql")`,
    )
  }
  const hash = definitionHash(trx, view)
  if (runtime.definitionHash !== hash)
    fail(
      `its catalog row was printed from another definition (hash ${runtime.definitionHash}, the definition now has ${hash})`,
    )
  const checked = await checkDefinition(trx, catalog, view, { existingTarget: runtime.target })
  if (JSON.stringify(runtime.key) !== JSON.stringify(view.key))
    fail(`its catalog row has the key (${runtime.key.join(', ')}), not (${view.key.join(', ')})`)
  if (JSON.stringify(runtime.columns) !== JSON.stringify(checked.columns))
    fail(
      `its catalog row lists the columns ${runtime.columns.join(', ')}, not ${checked.columns.join(', ')}`,
    )

  const target = runtime.target
  const targetOid = await relation(trx, target)
  if (!targetOid) fail(`table "${displayName(target)}" does not exist`)
  sameColumns(fail, target, await columnsOf(trx, targetOid!), checked.columnTypes)
  const keyTypes = view.key.map((k) => checked.columnTypes.find((c) => c.name === k)!)
  const indexes = await indexesOf(trx, targetOid!)
  const primary = indexes.find((i) => i.primary)
  if (JSON.stringify(primary?.columns) !== JSON.stringify(view.key))
    fail(
      `table "${displayName(target)}" ${primary ? `has the primary key (${primary.columns.join(', ')})` : 'has no primary key'}, not (${view.key.join(', ')})`,
    )
  for (const index of view.indexes ?? []) {
    if (!indexes.some((i) => !i.primary && JSON.stringify(i.columns) === JSON.stringify(index)))
      fail(
        `table "${displayName(target)}" has no index on (${index.join(', ')}), which the definition declares`,
      )
  }

  const objects = viewObjects(catalog, runtime.id)
  const logOid = await relation(trx, objects.log)
  if (!logOid) fail(`its change log "${displayName(objects.log)}" does not exist`)
  sameColumns(fail, objects.log, await columnsOf(trx, logOid!), [
    ...keyTypes,
    { name: 'matview_logged_at', type: 'timestamp with time zone' },
  ])
  if (
    !(await indexesOf(trx, logOid!)).some(
      (i) => JSON.stringify(i.columns) === JSON.stringify(view.key),
    )
  )
    fail(`its change log "${displayName(objects.log)}" has no index on (${view.key.join(', ')})`)
  await samePartitions(fail, trx, objects, logOid!, viewPartitions(view))
  const inboxOid = await relation(trx, objects.inbox)
  if (!inboxOid) fail(`its inbox "${displayName(objects.inbox)}" does not exist`)
  sameColumns(fail, objects.inbox, await columnsOf(trx, inboxOid!), [
    ...keyTypes.map((c) => ({ ...c, type: `${c.type}[]` })),
    { name: 'matview_logged_at', type: 'timestamp with time zone' },
  ])

  const { rows: recorded } = await sql<{ position: number; oid: string; mapping: string }>`
    SELECT position, source_oid::int8::text AS oid, mapping
    FROM ${sql.id(catalog, 'view_sources')} WHERE view = ${view.name} ORDER BY position`.execute(
    trx,
  )
  for (const [position, source] of checked.sources.entries()) {
    const name = checked.names[position]!
    const mapping = view.sources[name]!
    const row = recorded.find((r) => Number(r.position) === position)
    const kind = isQueryMapping(mapping) ? 'query' : 'columns'
    if (row?.oid !== source.oid || row.mapping !== kind)
      fail(`its catalog has no source ${position} on "${displayName(source)}" mapped by ${kind}`)
    let capture: CaptureTarget
    if (isQueryMapping(mapping)) {
      const stage = objects.stage(position)
      const stageOid = await relation(trx, stage)
      if (!stageOid) fail(`its stage "${displayName(stage)}" does not exist`)
      sameColumns(fail, stage, await columnsOf(trx, stageOid!), [
        { name: 'row', type: 'jsonb' },
        { name: 'matview_logged_at', type: 'timestamp with time zone' },
      ])
      capture = { kind: 'query', stage }
    } else {
      capture = {
        kind: 'columns',
        log: objects.inbox,
        keyColumns: view.key,
        sourceColumns: view.key.map((k) => mapping[k]!),
      }
    }
    const fnName = `capture_${runtime.id}_${position}`
    const { rows: fns } = await sql<{
      oid: string
      body: string
      definer: boolean
      config: string[] | null
    }>`
      SELECT p.oid::int8::text AS oid, p.prosrc AS body, p.prosecdef AS definer, p.proconfig AS config
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = ${catalog} AND p.proname = ${fnName} AND p.pronargs = 0`.execute(trx)
    const fn = fns[0]
    const label = `function "${catalog}.${fnName}"`
    if (!fn) fail(`${label} does not exist`)
    if (fn!.body !== captureFunctionBody(trx, capture, catalog, runtime.id))
      fail(`${label} has another body than matview's`)
    // A column map's capture runs as matview, a query map's as the writer (createCapture).
    const definer = capture.kind === 'columns'
    if (fn!.definer !== definer || !(fn!.config ?? []).includes('search_path=pg_catalog, pg_temp'))
      fail(
        `${label} is not SECURITY ${definer ? 'DEFINER' : 'INVOKER'} with search_path = pg_catalog, pg_temp`,
      )
    const { rows: triggers } = await sql<{
      name: string
      fn: string
      type: number
      enabled: string
      old: string | null
      new: string | null
    }>`
      SELECT t.tgname AS name, t.tgfoid::int8::text AS fn, t.tgtype AS type, t.tgenabled AS enabled,
             t.tgoldtable AS old, t.tgnewtable AS new
      FROM pg_catalog.pg_trigger t WHERE t.tgrelid = ${source.oid}::int8::oid AND NOT t.tgisinternal`.execute(
      trx,
    )
    const { rows: marker } = await sql<{ oid: string }>`
      SELECT ${`${quoteIdent(catalog)}.mark_truncated()`}::regprocedure::oid::int8::text AS oid`.execute(
      trx,
    )
    for (const event of ['insert', 'update', 'delete', 'truncate'] as const) {
      const name = objects.trigger(position, event)
      const found = triggers.find((t) => t.name === name)
      const where = `trigger "${name}" on "${displayName(source)}"`
      if (!found) fail(`${where} does not exist`)
      const expected = {
        fn: event === 'truncate' ? marker[0]!.oid : fn!.oid,
        type: EVENTS[event],
        old: event === 'update' || event === 'delete' ? 'old_rows' : null,
        new: event === 'update' || event === 'insert' ? 'new_rows' : null,
      }
      const actual = { fn: found!.fn, type: Number(found!.type), old: found!.old, new: found!.new }
      if (JSON.stringify(actual) !== JSON.stringify(expected))
        fail(
          `${where} is not the one matview creates (AFTER ${event.toUpperCase()} FOR EACH STATEMENT, calling ${event === 'truncate' ? `${catalog}.mark_truncated` : `${catalog}.${fnName}`})`,
        )
      // 'A' (ALWAYS) where matview's role owns the source, else 'O' (createCapture); a trigger
      // disabled, or firing only for replicas, misses writes.
      if (found!.enabled !== 'A' && found!.enabled !== 'O') fail(`${where} is disabled`)
    }
  }
  await sql`
    UPDATE ${sql.id(catalog, 'views')} SET state_reason = NULL, updated_at = now()
    WHERE name = ${view.name}`.execute(trx)
}

/** The log is a plain table, or split by a hash of the key into the partitions `create` makes. */
async function samePartitions(
  fail: (message: string) => never,
  db: Kysely<any>,
  objects: ReturnType<typeof viewObjects>,
  logOid: string,
  partitions: number,
): Promise<void> {
  const label = `its change log "${displayName(objects.log)}"`
  const { rows } = await sql<{ strategy: string }>`
    SELECT partstrat AS strategy FROM pg_catalog.pg_partitioned_table
    WHERE partrelid = ${logOid}::int8::oid`.execute(db)
  const strategy = rows[0]?.strategy
  if (partitions === 1) {
    if (strategy !== undefined) fail(`${label} is partitioned; the definition has no partitions`)
    return
  }
  if (strategy !== 'h')
    fail(`${label} is not split by a hash of the key into ${partitions} partitions`)
  const { rows: parts } = await sql<{ bound: string }>`
    SELECT c.relname::text || ' ' || pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound
    FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = ${logOid}::int8::oid`.execute(db)
  const have = parts.map((p) => p.bound).sort()
  const want = Array.from(
    { length: partitions },
    (_, k) =>
      `${objects.logPartition(k).table} FOR VALUES WITH (modulus ${partitions}, remainder ${k})`,
  ).sort()
  if (JSON.stringify(have) !== JSON.stringify(want))
    fail(`${label} does not have the ${partitions} hash partitions matview makes (${want[0]}, …)`)
}

function sameColumns(
  fail: (message: string) => never,
  table: QualifiedTable,
  actual: Column[],
  expected: Column[],
): void {
  const label = `table "${displayName(table)}"`
  for (const [i, want] of expected.entries()) {
    const have = actual.find((c) => c.name === want.name)
    if (!have) fail(`${label} has no column "${want.name}" (${want.type})`)
    if (have!.type !== want.type)
      fail(`${label}: column "${want.name}" is ${have!.type}, matview makes it ${want.type}`)
    if (actual.indexOf(have!) !== i)
      fail(`${label}: column "${want.name}" is not at position ${i + 1}`)
  }
  const extra = actual.find((c) => !expected.some((e) => e.name === c.name))
  if (extra) fail(`${label} has a column "${extra.name}" that matview does not make`)
}

async function relation(db: Kysely<any>, t: QualifiedTable): Promise<string | undefined> {
  const { rows } = await sql<{ oid: string | null }>`
    SELECT c.oid::int8::text AS oid FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${t.schema} AND c.relname = ${t.table} AND c.relkind IN ('r', 'p')`.execute(
    db,
  )
  return rows[0]?.oid ?? undefined
}

/** Plain indexes on columns (no expression, no predicate), with their columns in order. */
async function indexesOf(
  db: Kysely<any>,
  oid: string,
): Promise<{ primary: boolean; columns: string[] }[]> {
  const { rows } = await sql<{ primary: boolean; columns: string[] }>`
    SELECT i.indisprimary AS primary,
           ARRAY(SELECT a.attname::text
                 FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 ORDER BY k.ord) AS columns
    FROM pg_catalog.pg_index i
    WHERE i.indrelid = ${oid}::int8::oid AND i.indexprs IS NULL AND i.indpred IS NULL
      AND i.indisvalid`.execute(db)
  return rows.map((r) => ({ primary: r.primary, columns: parseNames(r.columns) }))
}

/** pg parses `text[]`; PGlite may hand back the literal `{a,b}`. */
function parseNames(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String)
  if (typeof value === 'string')
    return value
      .replace(/^\{|\}$/g, '')
      .split(',')
      .filter(Boolean)
      .map((s) => s.replace(/^"|"$/g, '').replaceAll('\\"', '"'))
  return []
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}
