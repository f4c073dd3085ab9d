import { type Kysely, sql } from 'kysely'
import { tableRef } from '../names.js'
import { clearRebuild, readRebuildRow } from './rebuild-record.js'

/**
 * Drops a rebuild's shadow table and forgets the rebuild; the live target is not touched.
 * Returns whether there was one. `matview drop` calls it too, so a view dropped half-way
 * through a rebuild leaves no second table behind. The rebuild's capture (triggers, log,
 * stages) then names no view: the caller retires it after the commit (`retireCapture`), a
 * source at a time, as nothing here may lock a source.
 */
export async function discardRebuild(
  trx: Kysely<any>,
  catalog: string,
  name: string,
): Promise<boolean> {
  const row = await readRebuildRow(trx, catalog, name)
  if (!row?.rebuild) return false
  await sql`DROP TABLE IF EXISTS ${tableRef(row.rebuild.shadow)}`.execute(trx)
  await clearRebuild(trx, catalog, name)
  return true
}

/**
 * Gives up a rebuild whose new definition is wrong (a duplicate or NULL key): its objects go,
 * and the view goes back to the state of its live target, which was never touched: `ready`, or
 * `needs_rebuild` when a source was truncated under it (the reason says which).
 */
export async function abandonRebuild(
  trx: Kysely<any>,
  catalog: string,
  name: string,
): Promise<void> {
  await discardRebuild(trx, catalog, name)
  await sql`
    UPDATE ${sql.id(catalog, 'views')}
    SET state = CASE WHEN state_reason IS NULL THEN 'ready' ELSE 'needs_rebuild' END,
        updated_at = now()
    WHERE name = ${name} AND state = 'rebuilding'`.execute(trx)
}
