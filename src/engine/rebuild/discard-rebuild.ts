import { type Kysely, sql } from 'kysely'
import { tableRef, viewObjects } from '../names.js'
import { dropCaptureTriggers } from '../schema-check.js'
import { clearRebuild, readRebuildRow } from './rebuild-record.js'

/**
 * Drops the capture objects named by `id`: triggers on each source (and its partitions,
 * children and parents), capture functions, staging tables and the change log. Triggers are
 * found by name, so a renamed source still loses them; one that is gone took them with it.
 * (drop-view.ts does the same from view_sources; a rebuild needs it for the old id and for its
 * own, whose sources are not there.)
 */
export async function dropCapture(
  trx: Kysely<any>,
  catalog: string,
  id: number,
  sources: readonly { position: number; oid: string }[],
): Promise<void> {
  const objects = viewObjects(catalog, id)
  // By trigger name: on partitions, parents, and a source renamed since, too.
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

/**
 * Drops a rebuild's objects (shadow, log, staging tables, triggers) and forgets it; the live
 * target is not touched. Returns whether there was one. `matview drop` calls it too, so a view
 * dropped half-way through a rebuild leaves no second table behind.
 */
export async function discardRebuild(
  trx: Kysely<any>,
  catalog: string,
  name: string,
): Promise<boolean> {
  const row = await readRebuildRow(trx, catalog, name)
  if (!row?.rebuild) return false
  await dropCapture(trx, catalog, row.rebuild.id, row.rebuild.sources)
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
