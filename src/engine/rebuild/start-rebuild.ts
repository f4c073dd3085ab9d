import { type Kysely, sql } from 'kysely'
import { ViewDefinitionError, ViewRunError } from '../../errors/matview-error.js'
import type { DeclarativeView } from '../../views/declarative.js'
import { checkDefinition, createViewObjects } from '../create-view.js'
import { requireTriggerRights } from '../install-capture.js'
import { displayName, type QualifiedTable } from '../names.js'
import { viewPartitions } from '../view-sql.js'
import { type RebuildRecord, saveRebuild, shadowTable, tableOid } from './rebuild-record.js'

/**
 * Starts a rebuild, in the caller's transaction: checks the definition as `create` does, then
 * creates the shadow target (next to the live one, named by a new id) and the new change log,
 * and records it all; the view is `rebuilding` from here. The new capture triggers are not
 * made here: the caller installs them after the commit, one source per transaction
 * (`installCapture`), and before the backfill reads anything, so every write from then on is
 * in the new log (DESIGN, Backfill). The live target and its capture are not touched.
 */
export async function startRebuild(
  trx: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
  target: QualifiedTable,
): Promise<RebuildRecord> {
  const checked = await checkDefinition(trx, catalog, view, { existingTarget: target })
  await requireTriggerRights(trx, view.name, 'starting the rebuild', checked.sources)
  // Creating a view never meets this (its table does not exist yet); its rebuild would swap
  // away the table its own capture is on.
  const liveOid = await tableOid(trx, target)
  if (checked.sources.some((source) => source.oid === liveOid)) {
    throw new ViewDefinitionError(
      view.name,
      `its query reads its own table "${displayName(target)}"; a view cannot be its own source`,
    )
  }
  // From the views' own id sequence: the swap makes it the view's id, and no other view has it.
  const { rows } = await sql<{ id: string }>`
    SELECT nextval(pg_catalog.pg_get_serial_sequence(quote_ident(${catalog}) || '.views', 'id')) AS id`.execute(
    trx,
  )
  const id = Number(rows[0]!.id)
  const shadow = shadowTable(catalog, id, target.schema)
  if (await tableOid(trx, shadow)) {
    throw new ViewRunError(
      view.name,
      `table "${displayName(shadow)}", which matview did not make, has the name the rebuild's new table needs; rename or drop it`,
    )
  }
  const sources = await createViewObjects(trx, catalog, view, checked, {
    id,
    target: shadow,
    capture: 'later',
  })
  const record: RebuildRecord = {
    id,
    shadow,
    hash: checked.hash,
    key: [...view.key],
    columns: checked.columns,
    sources,
    checkpoint: null,
    stale: null,
    partitions: viewPartitions(view),
  }
  await saveRebuild(trx, catalog, view.name, record)
  return record
}
