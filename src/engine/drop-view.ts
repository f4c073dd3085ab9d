import { type Kysely, sql } from 'kysely'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import { UsageError } from '../errors/matview-error.js'
import { type QualifiedTable, tableRef } from './names.js'
import { discardRebuild } from './rebuild/discard-rebuild.js'
import { retireCapture } from './retire-capture.js'

export interface DropResult {
  view: string
  /** The target table was dropped too (not with `keepTable`, never for hand-written views). */
  droppedTable: boolean
}

/**
 * Removes a view from the database: its catalog rows and its target unless `keepTable`, in one
 * transaction under the view's lock, then its capture triggers, functions, change log and
 * staging tables, a source table at a time (`retireCapture`): the drop never holds a lock on
 * one source while it waits for another, so it cannot cross an application's transaction.
 * Works from the catalog alone, so a view already removed from the config can be dropped.
 * Refuses while another view reads its target. A hand-written view's table is the
 * application's: only its catalog row goes. Its run history is kept.
 */
export async function dropView(
  database: Database,
  config: ResolvedConfig,
  name: string,
  options: { keepTable?: boolean } = {},
): Promise<DropResult> {
  const catalog = config.schema
  const key = { schema: catalog, name }
  const result = await database.db.connection().execute(async (conn) => {
    if (!(await database.adapter.tryLock(conn, key))) {
      // Known before the lock only to say which error applies: nothing is read for the drop.
      await readRow(conn, catalog, name)
      throw new UsageError(
        `view "${name}" is being updated by another runner; try again when it is done`,
      )
    }
    try {
      // Read under the lock: a rebuild that swapped its table in just before has changed the
      // view's id and table, and the drop must remove those, not the ones it replaced.
      const row = await readRow(conn, catalog, name)
      await refuseDependents(conn, catalog, name, row)
      const droppedTable =
        row.kind === 'declarative' && row.target_table !== null && !options.keepTable
      await conn.transaction().execute(async (trx) => {
        // A rebuild in progress has a second table: it goes too.
        if (row.kind === 'declarative') await discardRebuild(trx, catalog, name)
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
  // Its capture now names no view: it goes, a source at a time. What a long transaction on a
  // source keeps is removed by the next update or drop.
  await retireCapture(database.db, catalog)
  return result
}

interface DropRow {
  id: number
  kind: string
  target_schema: string | null
  target_table: string | null
}

async function readRow(db: Kysely<any>, catalog: string, name: string): Promise<DropRow> {
  const { rows } = await sql<DropRow>`
    SELECT id, kind, target_schema, target_table FROM ${sql.id(catalog, 'views')}
    WHERE name = ${name}`.execute(db)
  const row = rows[0]
  if (!row) {
    throw new UsageError(
      `view "${name}" is not in the catalog: it was never created, or is dropped already`,
      'UNKNOWN_VIEW',
    )
  }
  return row
}

/**
 * Views that read its table, from the catalog: a dependent only in the config has no objects
 * yet, and the next update creates both again.
 */
async function refuseDependents(
  db: Kysely<any>,
  catalog: string,
  name: string,
  row: DropRow,
): Promise<void> {
  if (row.target_table === null) return
  const { rows: readers } = await sql<{ view: string }>`
    SELECT DISTINCT view FROM ${sql.id(catalog, 'view_sources')}
    WHERE source_schema = ${row.target_schema} AND source_table = ${row.target_table}
      AND view <> ${name}`.execute(db)
  if (readers.length === 0) return
  const list = readers.map((d) => `"${d.view}"`).join(', ')
  throw new UsageError(
    `cannot drop view "${name}": view ${list} reads its table; drop ${readers.length > 1 ? 'them' : 'it'} first`,
  )
}

/**
 * Removes a declarative view that never became ready (its backfill met a bad key, or its
 * definition changed before it was ever served): catalog row and the target it made. Its
 * capture names no view then: the caller retires it after the commit (`retireCapture`).
 */
export async function discardUnfinishedView(
  trx: Kysely<any>,
  catalog: string,
  view: { name: string; id: number; target: QualifiedTable },
): Promise<void> {
  await sql`DELETE FROM ${sql.id(catalog, 'views')} WHERE name = ${view.name}`.execute(trx)
  await sql`DROP TABLE IF EXISTS ${tableRef(view.target)}`.execute(trx)
}
