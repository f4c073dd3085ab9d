import { type Kysely, sql } from 'kysely'
import { ViewRunError } from '../../errors/matview-error.js'
import type { DeclarativeView } from '../../views/declarative.js'
import type { ViewDefinition } from '../../views/view-definition.js'
import { createCapture } from '../capture-ddl.js'
import { inspectQuery } from '../inspect-definition.js'
import { columnList, displayName, type QualifiedTable, tableRef, viewObjects } from '../names.js'
import { postgresError } from '../postgres-errors.js'
import { viewQuery } from '../view-runtime.js'
import { definitionHash, isQueryMapping, sourceNames } from '../view-sql.js'
import { readRebuildRow } from './rebuild-record.js'

/** A view whose capture is on the rebuilt target (it reads it as a source). */
export interface Reader {
  view: string
  position: number
}

/** The table being swapped: the old one's columns, the new one's name, oid and columns. */
export interface Swapped {
  view: string
  table: QualifiedTable
  oid: string
  columns: string[]
  oldColumns: string[]
}

const GONE = sql.id('pg_temp', 'matview_rebuild_gone')
const CAME = sql.id('pg_temp', 'matview_rebuild_came')

/** The other views reading the table `oid`: live ones, and ones with a rebuild in progress. */
export async function readersOf(db: Kysely<any>, catalog: string, view: string, oid: string) {
  const { rows: live } = await sql<Reader>`
    SELECT view, position FROM ${sql.id(catalog, 'view_sources')}
    WHERE source_oid = ${oid}::int8::oid AND view <> ${view} ORDER BY view, position`.execute(db)
  const { rows: rebuilding } = await sql<{ name: string }>`
    SELECT name FROM ${sql.id(catalog, 'views')}
    WHERE rebuild_id IS NOT NULL AND name <> ${view}
      AND EXISTS (SELECT 1 FROM jsonb_array_elements(rebuild_sources) AS e
                  WHERE (e->>'oid')::oid = ${oid}::int8::oid)`.execute(db)
  return { live, rebuilding: rebuilding.map((r) => r.name) }
}

/**
 * Keeps, for the swap's transaction, the rows that differ between the old target and the
 * shadow: `gone` (old rows the shadow lacks) and `came` (shadow rows the old table lacks),
 * compared by their text image over the columns both have (json has no equality). A reader can
 * only read columns both have, so a row equal on those changes nothing for it.
 */
export async function keepDifferences(
  trx: Kysely<any>,
  old: QualifiedTable,
  shadow: QualifiedTable,
  oldColumns: readonly string[],
  columns: readonly string[],
): Promise<void> {
  const common = columns.filter((c) => oldColumns.includes(c))
  const image = (alias: string) => sql`ROW(${columnList(common, alias)})::text`
  const differs = (from: QualifiedTable, a: string, other: QualifiedTable, b: string) =>
    common.length === 0
      ? sql`SELECT ${sql.id(a)}.* FROM ${tableRef(from)} AS ${sql.id(a)}`
      : sql`SELECT ${sql.id(a)}.* FROM ${tableRef(from)} AS ${sql.id(a)}
            WHERE NOT EXISTS (SELECT 1 FROM ${tableRef(other)} AS ${sql.id(b)} WHERE ${image(b)} = ${image(a)})`
  await sql`CREATE TEMP TABLE matview_rebuild_gone ON COMMIT DROP AS ${differs(old, 'o', shadow, 'n')}`.execute(
    trx,
  )
  await sql`CREATE TEMP TABLE matview_rebuild_came ON COMMIT DROP AS ${differs(shadow, 'n', old, 'o')}`.execute(
    trx,
  )
}

/**
 * After the swap: the old table took the readers' triggers with it. Each reader gets its capture
 * again on the new table and the rows that differ in its change log (the mapped keys, or the
 * rows staged for its mapping query), so the change flows on like any write. A reader whose
 * definition here is not the one it was created with cannot be re-attached faithfully: it is
 * marked for a rebuild instead. Returns notes for the result line.
 */
export async function reattachReaders(
  trx: Kysely<any>,
  catalog: string,
  configViews: readonly ViewDefinition[],
  swapped: Swapped,
  readers: { live: Reader[]; rebuilding: string[] },
): Promise<string[]> {
  const reason = `table "${displayName(swapped.table)}", which it reads, was rebuilt`
  let reattached = 0
  let marked = 0
  for (const reader of readers.live) {
    await sql`
      UPDATE ${sql.id(catalog, 'view_sources')}
      SET source_oid = ${swapped.oid}::int8::oid, descendants = '{}',
          -- The new table's types: the schema watch compares the columns with these.
          mapped_columns = (
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('name', a.attname,
                     'type', pg_catalog.format_type(a.atttypid, a.atttypmod)) ORDER BY m.ord)
            FROM pg_catalog.jsonb_array_elements(mapped_columns) WITH ORDINALITY AS m(col, ord)
            JOIN pg_catalog.pg_attribute a
              ON a.attrelid = ${swapped.oid}::int8::oid AND a.attname = m.col->>'name'
                 AND a.attnum > 0 AND NOT a.attisdropped)
      WHERE view = ${reader.view} AND position = ${reader.position}`.execute(trx)
    const def = configViews.find(
      (v): v is DeclarativeView => v.kind === 'declarative' && v.name === reader.view,
    )
    const row = await readRebuildRow(trx, catalog, reader.view)
    if (!row) continue
    const faithful =
      def !== undefined &&
      row.definitionHash === definitionHash(trx, def) &&
      (row.state === 'ready' || row.state === 'building')
    if (faithful) {
      await reattach(trx, catalog, def, row.id, reader.position, swapped)
      reattached++
    } else if (row.state !== 'building') {
      // A view still building with another definition is started over by update anyway.
      // A rebuilding one keeps its state; the reason makes a failed rebuild fall back to
      // needs_rebuild, not to ready without capture.
      await sql`
        UPDATE ${sql.id(catalog, 'views')}
        SET state = CASE WHEN state = 'rebuilding' THEN state ELSE 'needs_rebuild' END,
            state_reason = ${reason}, updated_at = now()
        WHERE name = ${reader.view}`.execute(trx)
      marked++
    }
  }
  // A rebuild in progress elsewhere had its capture on the old table: it must start over.
  for (const name of readers.rebuilding) {
    await sql`
      UPDATE ${sql.id(catalog, 'views')} SET rebuild_stale = ${reason}, updated_at = now()
      WHERE name = ${name}`.execute(trx)
  }
  const notes: string[] = []
  if (reattached > 0)
    notes.push(`${reattached} reading view${reattached > 1 ? 's' : ''} given the changes`)
  if (marked > 0) notes.push(`${marked} reading view${marked > 1 ? 's' : ''} marked for rebuild`)
  return notes
}

async function reattach(
  trx: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  id: number,
  position: number,
  swapped: Swapped,
): Promise<void> {
  const fail = (detail: string): never => {
    throw new ViewRunError(
      swapped.view,
      `view "${view.name}" reads its table and would break: ${detail}; change "${view.name}" first, or keep what it reads`,
    )
  }
  // Its query must still run on the new table (a column it reads may be gone).
  await inspectQuery(trx, view.name, 'its query', viewQuery(trx, view)).catch((error) =>
    fail(
      `its query fails on the new table: ${postgresError(error.cause)?.message ?? error.message}`,
    ),
  )
  const objects = viewObjects(catalog, id)
  const mapping = view.sources[sourceNames(view)[position]!]!
  const _table = tableRef(swapped.table)
  // Its triggers went with the old table; the function goes now and comes back below.
  await sql`DROP FUNCTION IF EXISTS ${objects.captureFunction(position)}()`.execute(trx)
  if (isQueryMapping(mapping)) {
    // The stage holds rows as jsonb, read back with the source's current row type, so it
    // serves the new table as it is; what waits in it is mapped by the next batch.
    const stage = objects.stage(position)
    await createCapture(trx, objects, catalog, position, swapped.table, { kind: 'query', stage })
    await sql`INSERT INTO ${tableRef(stage)} (row) SELECT pg_catalog.to_jsonb(g) FROM ${GONE} AS g`.execute(
      trx,
    )
    await sql`INSERT INTO ${tableRef(stage)} (row) SELECT pg_catalog.to_jsonb(c) FROM ${CAME} AS c`.execute(
      trx,
    )
    return
  }
  const mapped = view.key.map((k) => mapping[k]!)
  const missing = mapped.filter((c) => !swapped.columns.includes(c))
  if (missing.length > 0) {
    fail(`its key comes from ${missing.map((c) => `"${c}"`).join(', ')}, which the new table lacks`)
  }
  await createCapture(trx, objects, catalog, position, swapped.table, {
    kind: 'columns',
    log: objects.inbox,
    keyColumns: view.key,
    sourceColumns: mapped,
  })
  const keys = columnList(view.key)
  const notNull = sql.join(
    mapped.map((c) => sql`${sql.id(c)} IS NOT NULL`),
    sql` AND `,
  )
  // Two statements, not a UNION: old and new columns may differ in type, each casts on its own.
  try {
    if (mapped.every((c) => swapped.oldColumns.includes(c))) {
      await sql`INSERT INTO ${tableRef(objects.log)} (${keys}) SELECT ${columnList(mapped)} FROM ${GONE} WHERE ${notNull}`.execute(
        trx,
      )
    }
    await sql`INSERT INTO ${tableRef(objects.log)} (${keys}) SELECT ${columnList(mapped)} FROM ${CAME} WHERE ${notNull}`.execute(
      trx,
    )
  } catch (error) {
    const pgError = postgresError(error)
    if (!pgError) throw error
    fail(`its key cannot be taken from the new table: ${pgError.message}`)
  }
}
