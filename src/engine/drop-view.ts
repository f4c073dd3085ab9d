import { type Kysely, sql } from 'kysely'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import { UsageError } from '../errors/matview-error.js'
import { type QualifiedTable, tableRef, viewObjects } from './names.js'
import { discardRebuild } from './rebuild/discard-rebuild.js'
import { dropCaptureTriggers } from './schema-check.js'

export interface DropResult {
  view: string
  /** The target table was dropped too (not with `keepTable`, never for hand-written views). */
  droppedTable: boolean
}

/**
 * Removes a view from the database: its capture triggers and functions, change log, staging
 * tables and catalog rows, and its target unless `keepTable`, all in one transaction under the
 * view's lock. Works from the catalog alone, so a view already removed from the config can be
 * dropped. Refuses while another view reads its target. A hand-written view's table is the
 * application's: only its catalog row goes. Its run history is kept.
 */
export async function dropView(
  database: Database,
  config: ResolvedConfig,
  name: string,
  options: { keepTable?: boolean } = {},
): Promise<DropResult> {
  const catalog = config.schema
  const { rows } = await sql<{
    id: number
    kind: string
    target_schema: string | null
    target_table: string | null
  }>`
    SELECT id, kind, target_schema, target_table FROM ${sql.id(catalog, 'views')}
    WHERE name = ${name}`.execute(database.db)
  const row = rows[0]
  if (!row) {
    throw new UsageError(
      `view "${name}" is not in the catalog: it was never created, or is dropped already`,
      'UNKNOWN_VIEW',
    )
  }
  // Views that read its table, from the catalog: a dependent only in the config has no
  // objects yet, and the next update creates both again.
  const dependents = new Set<string>()
  if (row.target_table !== null) {
    const { rows: readers } = await sql<{ view: string }>`
      SELECT DISTINCT view FROM ${sql.id(catalog, 'view_sources')}
      WHERE source_schema = ${row.target_schema} AND source_table = ${row.target_table}
        AND view <> ${name}`.execute(database.db)
    for (const r of readers) dependents.add(r.view)
  }
  if (dependents.size > 0) {
    const list = [...dependents].map((d) => `"${d}"`).join(', ')
    throw new UsageError(
      `cannot drop view "${name}": view ${list} reads its table; drop ${dependents.size > 1 ? 'them' : 'it'} first`,
    )
  }

  const key = { schema: catalog, name }
  return database.db.connection().execute(async (conn) => {
    if (!(await database.adapter.tryLock(conn, key))) {
      throw new UsageError(
        `view "${name}" is being updated by another runner; try again when it is done`,
      )
    }
    try {
      const droppedTable =
        row.kind === 'declarative' && row.target_table !== null && !options.keepTable
      await conn.transaction().execute(async (trx) => {
        if (row.kind === 'declarative') {
          // A rebuild in progress has a second table and capture: they go too.
          await discardRebuild(trx, catalog, name)
          await dropObjects(trx, catalog, name, Number(row.id))
        }
        await sql`DELETE FROM ${sql.id(catalog, 'views')} WHERE name = ${name}`.execute(trx)
        if (droppedTable) {
          await sql`DROP TABLE IF EXISTS ${tableRef({ schema: row.target_schema!, table: row.target_table! })}`.execute(
            trx,
          )
        }
      })
      return { view: name, droppedTable }
    } finally {
      await database.adapter.unlock(conn, key).catch(() => {})
    }
  })
}

/**
 * Removes a declarative view that never became ready (its backfill met a bad key, or its
 * definition changed before it was ever served): objects, catalog row and the target it made.
 */
export async function discardUnfinishedView(
  trx: Kysely<any>,
  catalog: string,
  view: { name: string; id: number; target: QualifiedTable },
): Promise<void> {
  await dropObjects(trx, catalog, view.name, view.id)
  await sql`DELETE FROM ${sql.id(catalog, 'views')} WHERE name = ${view.name}`.execute(trx)
  await sql`DROP TABLE IF EXISTS ${tableRef(view.target)}`.execute(trx)
}

async function dropObjects(
  trx: Kysely<any>,
  catalog: string,
  name: string,
  id: number,
): Promise<void> {
  const objects = viewObjects(catalog, id)
  const { rows: sources } = await sql<{ position: number }>`
    SELECT position FROM ${sql.id(catalog, 'view_sources')} WHERE view = ${name}`.execute(trx)
  // By trigger name, not by the source's name: a source dropped, renamed or replaced since
  // (a new table under its name) must not be looked for by that name.
  await dropCaptureTriggers(
    trx,
    catalog,
    id,
    sources.map((s) => s.position),
  )
  for (const source of sources) {
    await sql`DROP FUNCTION IF EXISTS ${objects.captureFunction(source.position)}()`.execute(trx)
    await sql`DROP TABLE IF EXISTS ${tableRef(objects.stage(source.position))}`.execute(trx)
  }
  await sql`DROP TABLE IF EXISTS ${tableRef(objects.log)}, ${tableRef(objects.inbox)}`.execute(trx)
}
