import { type RawBuilder, sql } from 'kysely'

/** A table named in a definition: `schema.table`, or `table` found through the search path. */
export interface TableName {
  schema?: string
  table: string
}

/**
 * Splits a view or source name at its first dot. Names are taken literally (no SQL quoting
 * rules), so `My Orders` is the table called exactly that; a table whose own name holds a dot
 * must be written with its schema (`public.my.table`).
 */
export function parseTableName(name: string): TableName {
  const dot = name.indexOf('.')
  return dot > 0 ? { schema: name.slice(0, dot), table: name.slice(dot + 1) } : { table: name }
}

/** A resolved, schema-qualified table. */
export interface QualifiedTable {
  schema: string
  table: string
}

export function tableRef(t: QualifiedTable): RawBuilder<unknown> {
  return sql.id(t.schema, t.table)
}

export function displayName(t: QualifiedTable): string {
  return `${t.schema}.${t.table}`
}

/**
 * The objects matview keeps for one declarative view. They live in the catalog schema and are
 * named by the view's catalog id, so a view name of any length or spelling never reaches DDL.
 */
export function viewObjects(catalog: string, id: number) {
  const prefix = `${catalog}_${id}`
  return {
    /** The view's catalog id (a rebuild's shadow objects carry the rebuild's id). */
    id,
    /** Keys to apply, indexed: batches claim from it in key order and delete what they apply. */
    log: { schema: catalog, table: `log_${id}` } as QualifiedTable,
    /**
     * What the capture triggers append to: one row per statement, the key columns as arrays,
     * no index, so a writer pays one heap insert and no index upkeep. Each claim first moves
     * it into the log (see `moveInbox`).
     */
    inbox: { schema: catalog, table: `inbox_${id}` } as QualifiedTable,
    /** Partition `k` (from 0) of a partitioned change log. */
    logPartition: (k: number): QualifiedTable => ({ schema: catalog, table: `log_${id}_p${k}` }),
    stage: (position: number): QualifiedTable => ({
      schema: catalog,
      table: `stage_${id}_${position}`,
    }),
    captureFunction: (position: number) => sql.id(catalog, `capture_${id}_${position}`),
    // Trigger names are per table; the catalog name in them keeps two catalogs apart.
    trigger: (position: number, event: 'insert' | 'update' | 'delete' | 'truncate') =>
      `${prefix}_${position}_${event}`,
  }
}

export type ViewObjects = ReturnType<typeof viewObjects>

/** `a, b, c` of quoted column names, optionally qualified by a table alias. */
export function columnList(columns: readonly string[], alias?: string): RawBuilder<unknown> {
  return sql.join(columns.map((c) => (alias ? sql.id(alias, c) : sql.id(c))))
}

/**
 * The lock of one partition of a view: its appliers hold the view's lock shared and this one
 * exclusive (see `applyPartitions` in `src/engine/declarative-runner.ts`).
 */
export function partitionLockKey(catalog: string, view: string, k: number) {
  return { schema: catalog, name: `${view}#p${k}` }
}
