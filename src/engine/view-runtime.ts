import { type Kysely, type RawBuilder, sql } from 'kysely'
import type { ViewState } from '../catalog/view-rows.js'
import type { DeclarativeView } from '../views/declarative.js'
import { type QualifiedTable, type ViewObjects, viewObjects } from './names.js'
import { constantSql, isQueryMapping, sourceNames } from './view-sql.js'

/** A source whose rows are staged by its trigger and mapped to keys when a batch claims them. */
export interface StagedSource {
  position: number
  name: string
  stage: QualifiedTable
  /** The source table, whose row type reads the staged rows back. */
  table: QualifiedTable
  mapping: RawBuilder<unknown>
}

/** Everything a batch needs about a created declarative view. */
export interface ViewRuntime {
  name: string
  id: number
  catalog: string
  target: QualifiedTable
  key: string[]
  columns: string[]
  state: ViewState
  stateReason: string | null
  definitionHash: string | null
  backfillCheckpoint: BackfillCheckpoint | null
  query: RawBuilder<unknown>
  objects: ViewObjects
  staged: StagedSource[]
  /** Hash partitions of the change log (1: a plain table). */
  partitions: number
  /**
   * Whether the view has an inbox (objects.inbox). Views created by an earlier matview have none:
   * their capture writes the log directly, and `matview rebuild` gives them one.
   */
  hasInbox: boolean
  /** The inbox's size on disk when the runtime was loaded (bytes, with its TOAST; 0 without). */
  inboxBytes: number
}

/** Where a backfill stands: the key-range bounds (as text) and how many ranges are done. */
export type BackfillCheckpoint =
  | { method: 'ranges'; bounds: string[]; done: number }
  | { method: 'keyset'; after: string[] | null; copied: number; estimate: number }

/** The view's query as SQL text without a trailing semicolon, ready to nest as a subquery. */
export function viewQuery(db: Kysely<any>, view: DeclarativeView): RawBuilder<unknown> {
  return sql.raw(trimQuery(constantSql(db, view.name, 'the query', view.query)))
}

export function mappingQuery(
  db: Kysely<any>,
  view: DeclarativeView,
  source: string,
): RawBuilder<unknown> {
  const mapping = view.sources[source]!
  if (!isQueryMapping(mapping)) throw new Error(`internal: source ${source} has a column map`)
  return sql.raw(
    trimQuery(constantSql(db, view.name, `the mapping of source "${source}"`, mapping)),
  )
}

function trimQuery(text: string): string {
  return text.trim().replace(/;+\s*$/, '')
}

/** Loads the created view from the catalog, or undefined when it was never created. */
export async function loadViewRuntime(
  db: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
): Promise<ViewRuntime | undefined> {
  // One round trip: it runs at the start of every view's run.
  const { rows } = await sql<Record<string, any>>`
    SELECT id, kind, state, state_reason, definition_hash, backfill_checkpoint,
           target_schema, target_table, key_columns, columns, partitions,
           pg_catalog.pg_total_relation_size(pg_catalog.to_regclass(
             pg_catalog.quote_ident(${catalog}) || '.' || pg_catalog.quote_ident('inbox_' || v.id))) AS inbox_bytes,
           (SELECT pg_catalog.json_agg(json_build_array(vs.position, vs.source_schema, vs.source_table)
                                       ORDER BY vs.position)
            FROM ${sql.id(catalog, 'view_sources')} AS vs
            WHERE vs.view = v.name AND vs.mapping = 'query') AS staged
    FROM ${sql.id(catalog, 'views')} AS v WHERE name = ${view.name}`.execute(db)
  const row = rows[0]
  if (row?.kind !== 'declarative' || row.target_table === null) return undefined
  const id = Number(row.id)
  const objects = viewObjects(catalog, id)
  const names = sourceNames(view)
  const sourceRows = (parseJson<[number, string, string][] | null>(row.staged) ?? []).map(
    ([position, schema, table]) => ({ position: Number(position), table: { schema, table } }),
  )
  return {
    name: view.name,
    id,
    catalog,
    target: { schema: row.target_schema, table: row.target_table },
    key: parseJson(row.key_columns),
    columns: parseJson(row.columns),
    state: row.state,
    stateReason: row.state_reason ?? null,
    definitionHash: row.definition_hash ?? null,
    backfillCheckpoint: row.backfill_checkpoint ? parseJson(row.backfill_checkpoint) : null,
    query: viewQuery(db, view),
    objects,
    partitions: Number(row.partitions ?? 1),
    // NULL: no such table (pg_total_relation_size of a NULL regclass).
    hasInbox: row.inbox_bytes !== null,
    inboxBytes: Number(row.inbox_bytes ?? 0),
    staged: sourceRows.map(({ position, table }) => ({
      position,
      table,
      name: names[position]!,
      stage: objects.stage(position),
      mapping: mappingQuery(db, view, names[position]!),
    })),
  }
}

/** PGlite and pg both parse jsonb; a string still arrives where a driver was told not to. */
function parseJson<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T
}

/**
 * The runtime of one partition of a partitioned view: claims read and applies delete the
 * partition's own table (its index alone), everything else is the view's. Staged rows are
 * mapped through the view's runtime: their keys may belong to any partition.
 */
export function partitionRuntime(view: ViewRuntime, k: number): ViewRuntime {
  return { ...view, objects: { ...view.objects, log: view.objects.logPartition(k) } }
}
