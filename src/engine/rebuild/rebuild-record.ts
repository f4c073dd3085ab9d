import { type Kysely, sql } from 'kysely'
import type { ViewState } from '../../catalog/view-rows.js'
import type { DeclarativeView } from '../../views/declarative.js'
import type { CheckpointStore } from '../backfill.js'
import type { SourceRecord } from '../create-view.js'
import { type QualifiedTable, viewObjects } from '../names.js'
import {
  type BackfillCheckpoint,
  mappingQuery,
  type ViewRuntime,
  viewQuery,
} from '../view-runtime.js'
import { sourceNames } from '../view-sql.js'

/** Where a rebuild stands: filling the shadow (a backfill checkpoint), or filled. */
export type RebuildCheckpoint = BackfillCheckpoint | { method: 'done' }

/** A rebuild in progress, from the catalog (migration 3). */
export interface RebuildRecord {
  /** The id naming the rebuild's objects; the view's id after the swap. */
  id: number
  shadow: QualifiedTable
  hash: string
  key: string[]
  columns: string[]
  sources: SourceRecord[]
  checkpoint: RebuildCheckpoint | null
  /** Why the shadow must not be swapped in, if it must not. */
  stale: string | null
  /** Hash partitions of the rebuild's change log. */
  partitions: number
}

/** A declarative view's catalog row as a rebuild sees it. */
export interface RebuildRow {
  name: string
  kind: string
  id: number
  state: ViewState
  stateReason: string | null
  definitionHash: string | null
  /** The live target, or null for a hand-written view. */
  target: QualifiedTable | null
  /** The live target's columns. */
  columns: string[]
  rebuild: RebuildRecord | null
}

/** Reads the view's row; `lock` takes its row lock (the swap holds it against TRUNCATE marks). */
export async function readRebuildRow(
  db: Kysely<any>,
  catalog: string,
  name: string,
  options: { lock?: boolean } = {},
): Promise<RebuildRow | undefined> {
  const { rows } = await sql<Record<string, any>>`
    SELECT * FROM ${sql.id(catalog, 'views')} WHERE name = ${name}
    ${options.lock ? sql`FOR UPDATE` : sql``}`.execute(db)
  const row = rows[0]
  if (!row) return undefined
  const target =
    row.target_table === null ? null : { schema: row.target_schema, table: row.target_table }
  return {
    name,
    kind: row.kind,
    id: Number(row.id),
    state: row.state,
    stateReason: row.state_reason ?? null,
    definitionHash: row.definition_hash ?? null,
    target,
    columns: row.columns ? parseJson(row.columns) : [],
    rebuild:
      row.rebuild_id === null || target === null
        ? null
        : {
            id: Number(row.rebuild_id),
            shadow: { schema: target.schema, table: row.rebuild_table },
            hash: row.rebuild_hash,
            key: parseJson(row.rebuild_key_columns),
            columns: parseJson(row.rebuild_columns),
            sources: parseJson(row.rebuild_sources),
            checkpoint: row.rebuild_checkpoint ? parseJson(row.rebuild_checkpoint) : null,
            stale: row.rebuild_stale ?? null,
            partitions: Number(row.rebuild_partitions ?? 1),
          },
  }
}

/** Records a started rebuild; the view is `rebuilding` until the swap or a discard. */
export async function saveRebuild(
  db: Kysely<any>,
  catalog: string,
  name: string,
  record: RebuildRecord,
): Promise<void> {
  await sql`
    UPDATE ${sql.id(catalog, 'views')}
    SET state = 'rebuilding', rebuild_id = ${record.id}, rebuild_table = ${record.shadow.table},
        rebuild_hash = ${record.hash}, rebuild_key_columns = ${JSON.stringify(record.key)}::jsonb,
        rebuild_columns = ${JSON.stringify(record.columns)}::jsonb,
        rebuild_sources = ${JSON.stringify(record.sources)}::jsonb,
        rebuild_partitions = ${record.partitions}, rebuild_checkpoint = NULL, rebuild_stale = NULL, rebuild_started_at = now(),
        updated_at = now()
    WHERE name = ${name}`.execute(db)
}

/** Forgets the rebuild in the catalog (its objects are the caller's to drop). */
export async function clearRebuild(db: Kysely<any>, catalog: string, name: string): Promise<void> {
  await sql`
    UPDATE ${sql.id(catalog, 'views')}
    SET rebuild_id = NULL, rebuild_table = NULL, rebuild_hash = NULL, rebuild_key_columns = NULL,
        rebuild_columns = NULL, rebuild_sources = NULL, rebuild_checkpoint = NULL,
        rebuild_stale = NULL, rebuild_started_at = NULL, rebuild_partitions = NULL,
        updated_at = now()
    WHERE name = ${name}`.execute(db)
}

/**
 * The shadow's backfill checkpoint, in the rebuild's own column; once every range is in it says
 * so, and a resumed rebuild goes straight to the catch-up.
 */
export function rebuildCheckpointStore(catalog: string, name: string): CheckpointStore {
  return {
    save: (db, checkpoint) => saveCheckpoint(db, catalog, name, checkpoint),
    finish: (db) => saveCheckpoint(db, catalog, name, { method: 'done' }),
  }
}

async function saveCheckpoint(
  db: Kysely<any>,
  catalog: string,
  name: string,
  checkpoint: RebuildCheckpoint,
): Promise<void> {
  await sql`
    UPDATE ${sql.id(catalog, 'views')}
    SET rebuild_checkpoint = ${JSON.stringify(checkpoint)}::jsonb, updated_at = now()
    WHERE name = ${name}`.execute(db)
}

/**
 * The shadow's table name: in the target's schema, named by the catalog and the rebuild's id
 * (never by the view's name, which may be long or hostile), like the view's other objects.
 */
export function shadowTable(catalog: string, id: number, schema: string): QualifiedTable {
  const table = `${catalog}_rebuild_${id}`
  // PostgreSQL would cut a longer name; the catalog schema's name is the only long part.
  return { schema, table: Buffer.byteLength(table) <= 63 ? table : `matview_rebuild_${id}` }
}

/** A runtime whose target is the shadow and whose log is the rebuild's: backfill and apply fill it. */
export function shadowRuntime(
  db: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  record: RebuildRecord,
): ViewRuntime {
  const objects = viewObjects(catalog, record.id)
  const names = sourceNames(view)
  const checkpoint = record.checkpoint?.method === 'done' ? null : (record.checkpoint ?? null)
  return {
    name: view.name,
    id: record.id,
    catalog,
    target: record.shadow,
    key: record.key,
    columns: record.columns,
    state: 'building',
    stateReason: null,
    definitionHash: record.hash,
    backfillCheckpoint: checkpoint,
    query: viewQuery(db, view),
    objects,
    partitions: record.partitions,
    hasInbox: true,
    inboxBytes: 0,
    staged: record.sources
      .filter((s) => s.mapping === 'query')
      .map((s) => ({
        position: s.position,
        table: { schema: s.schema, table: s.table },
        name: names[s.position]!,
        stage: objects.stage(s.position),
        mapping: mappingQuery(db, view, names[s.position]!),
      })),
  }
}

/** The oid of a table, or undefined when it does not exist. */
export async function tableOid(
  db: Kysely<any>,
  table: QualifiedTable,
): Promise<string | undefined> {
  const { rows } = await sql<{ oid: string }>`
    SELECT c.oid::int8::text AS oid FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${table.schema} AND c.relname = ${table.table}`.execute(db)
  return rows[0]?.oid
}

function parseJson<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T
}
