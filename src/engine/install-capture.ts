import { type Kysely, sql } from 'kysely'
import { ViewRunError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { type CaptureTarget, createCapture } from './capture-ddl.js'
import { displayName, type QualifiedTable, viewObjects } from './names.js'
import { privilegeHint, SQLSTATE } from './postgres-errors.js'
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
        // No LOCK TABLE first: in that mode it needs UPDATE or DELETE on the table, which
        // matview's role need not have (TRIGGER and SELECT are enough, least-privilege.md).
        // No other runner installs this id's capture: the caller holds the view's lock.
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

/**
 * Refuses, before anything is made, a source matview's role may not put triggers on: the
 * capture comes after the view's objects are committed, and a view left half-made by a
 * `permission denied` on its last source could not even take its first source's triggers off
 * again (DROP TRIGGER needs the table's owner). Says what PostgreSQL would, with the way out.
 */
export async function requireTriggerRights(
  db: Kysely<any>,
  view: string,
  doing: string,
  sources: readonly { oid: string; table: string }[],
): Promise<void> {
  for (const source of sources) {
    const { rows } = await sql<{ allowed: boolean }>`
      SELECT pg_catalog.has_table_privilege(${source.oid}::int8::oid, 'TRIGGER') AS allowed`.execute(
      db,
    )
    if (rows[0]?.allowed) continue
    const hint = privilegeHint({ code: SQLSTATE.insufficientPrivilege, message: '' })
    throw new ViewRunError(
      view,
      `${doing} failed: permission denied for table ${source.table}${hint}`,
    )
  }
}
