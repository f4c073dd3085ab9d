import { type Kysely, sql } from 'kysely'
import { ViewRunError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { type CaptureTarget, createCapture } from './capture-ddl.js'
import { displayName, type QualifiedTable, viewObjects } from './names.js'
import { onSource, type SourceDdlOptions } from './source-ddl.js'
import { isQueryMapping, sourceNames } from './view-sql.js'

/** A source as the catalog records it: where it is in the definition and which table it is. */
export interface CapturedSource {
  position: number
  oid: string
}

/** What the capture of source `position` of `view` writes to, for objects named by `id`. */
export function captureTargetOf(
  catalog: string,
  view: DeclarativeView,
  id: number,
  position: number,
): CaptureTarget {
  const objects = viewObjects(catalog, id)
  const mapping = view.sources[sourceNames(view)[position]!]!
  if (isQueryMapping(mapping)) return { kind: 'query', stage: objects.stage(position) }
  return {
    kind: 'columns',
    log: objects.inbox,
    keyColumns: [...view.key],
    sourceColumns: view.key.map((k) => mapping[k]!),
  }
}

/**
 * Installs the capture (function and triggers) of each source that lacks it, each source in a
 * short transaction of its own (see {@link onSource}); the view's tables, stages and catalog
 * rows are already committed. Runs before any fill reads the sources, as DESIGN (Backfill)
 * asks: CREATE TRIGGER waits for the writers already on the table, so once it commits every
 * write is captured. A run that stops half-way leaves the view `building` (or `rebuilding`),
 * never runnable, and the next run installs the rest: a source whose triggers are there is
 * skipped.
 */
export async function installCapture(
  db: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  id: number,
  sources: readonly CapturedSource[],
  options: SourceDdlOptions = {},
): Promise<void> {
  const objects = viewObjects(catalog, id)
  for (const source of sources) {
    const table = await tableOf(db, source.oid)
    if (!table) {
      throw new ViewRunError(
        view.name,
        `source ${source.position + 1} (oid ${source.oid}) was dropped before its capture was installed; run "matview drop ${view.name}", and update creates the view again`,
      )
    }
    if (await hasCapture(db, source.oid, objects.trigger(source.position, 'insert'))) continue
    await onSource(
      db,
      view.name,
      displayName(table),
      async (trx) => {
        // Looked at again under the lock: another runner may have installed it meanwhile.
        await sql`LOCK TABLE ${sql.id(table.schema, table.table)} IN SHARE ROW EXCLUSIVE MODE`.execute(
          trx,
        )
        if (await hasCapture(trx, source.oid, objects.trigger(source.position, 'insert'))) return
        await createCapture(
          trx,
          objects,
          catalog,
          source.position,
          table,
          captureTargetOf(catalog, view, id, source.position),
        )
      },
      options,
    )
  }
}

async function tableOf(db: Kysely<any>, oid: string): Promise<QualifiedTable | undefined> {
  const { rows } = await sql<QualifiedTable>`
    SELECT n.nspname AS schema, c.relname AS table FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = ${oid}::int8::oid`.execute(db)
  return rows[0]
}

async function hasCapture(db: Kysely<any>, oid: string, trigger: string): Promise<boolean> {
  const { rows } = await sql<{ found: boolean }>`
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                   WHERE tgrelid = ${oid}::int8::oid AND tgname = ${trigger}) AS found`.execute(db)
  return rows[0]?.found === true
}

/** The sources `view_sources` records for a view, for {@link installCapture}. */
export async function recordedSources(
  db: Kysely<any>,
  catalog: string,
  view: string,
): Promise<CapturedSource[]> {
  const { rows } = await sql<CapturedSource>`
    SELECT position, source_oid::int8::text AS oid FROM ${sql.id(catalog, 'view_sources')}
    WHERE view = ${view} ORDER BY position`.execute(db)
  return rows.map((r) => ({ position: Number(r.position), oid: r.oid }))
}
