import { type Kysely, sql } from 'kysely'
import { ViewRunError } from '../../errors/matview-error.js'
import type { ViewDefinition } from '../../views/view-definition.js'
import type { BatchCounts } from '../apply-batch.js'
import { markOwnDdl } from '../capture-ddl.js'
import { tableRef } from '../names.js'
import type { ViewRuntime } from '../view-runtime.js'
import { catchUp } from './catch-up.js'
import { keepDifferences, readersOf, reattachReaders } from './readers.js'
import { clearRebuild, readRebuildRow, tableOid } from './rebuild-record.js'
import { refuseBlockedSwap } from './swap-blockers.js'
import { applyDressing, readDressing } from './table-dressing.js'

export interface SwapOptions {
  catalog: string
  configViews: readonly ViewDefinition[]
  batchSize: number
  /** How long any lock wait of the swap may take before it gives up (and is tried again). */
  lockTimeoutMs: number
  /** Whether what the new log holds is applied by key before the swap (see catchUp). */
  byKey: boolean
  onBatch: (counts: BatchCounts) => void
}

/**
 * Swaps the filled shadow in, in one transaction: applies what the new log still holds, drops
 * the old table, renames the shadow to the target's name with the old table's index names,
 * owner, grants and comments, re-attaches the views that read it, and records the new
 * definition as the view's. Readers see the old table until the commit and the new one after
 * it, never an empty or partial one; the lock that blocks them (the target's) is taken last,
 * under `lock_timeout`. The old capture is not touched: the caller retires it after the commit,
 * a source at a time (`retireCapture`), so the swap locks no source in a mode writers wait for.
 */
export async function swapIn(
  conn: Kysely<any>,
  shadow: ViewRuntime,
  options: SwapOptions,
): Promise<string[]> {
  const { catalog } = options
  const name = shadow.name
  const applied: BatchCounts[] = []
  const notes = await conn.transaction().execute(async (trx) => {
    // Dropping the old table and capture is matview's own DDL, not a source replaced.
    await markOwnDdl(trx)
    await sql`SELECT pg_catalog.set_config('lock_timeout', ${`${options.lockTimeoutMs}ms`}, true)`.execute(
      trx,
    )
    // The row lock also holds back a TRUNCATE's mark until the swap is done: it then marks the
    // new sources, which view_sources names by then.
    const row = await readRebuildRow(trx, catalog, name, { lock: true })
    const record = row?.rebuild
    if (!row?.target || record?.id !== shadow.id) {
      throw new ViewRunError(name, 'the rebuild was discarded while it ran; run it again')
    }
    if (record.stale) {
      throw new ViewRunError(
        name,
        `${record.stale}, so the new table may miss rows; nothing was swapped: run "matview rebuild ${name}" again, it starts over`,
      )
    }
    const live = row.target
    const oldOid = await tableOid(trx, live)
    if (!oldOid) throw new ViewRunError(name, `its table "${live.schema}.${live.table}" is gone`)
    await refuseBlockedSwap(trx, catalog, name, live, oldOid)
    await catchUp(trx, shadow, {
      batchSize: options.batchSize,
      byKey: options.byKey,
      onBatch: (counts) => applied.push(counts),
    })
    const dressing = await readDressing(trx, oldOid)
    const readers = await readersOf(trx, catalog, name, oldOid)
    if (readers.live.length > 0) {
      await keepDifferences(trx, live, shadow.target, row.columns, record.columns)
    }

    // The one lock readers wait for, from here to the commit. No source is locked in a mode
    // writers wait for: the old capture stays until after the commit (retireCapture), and its
    // triggers append to the old inbox meanwhile, which nothing reads.
    await sql`LOCK TABLE ${tableRef(live)} IN ACCESS EXCLUSIVE MODE`.execute(trx)
    await sql`DROP TABLE ${tableRef(live)}`.execute(trx)
    await sql`ALTER TABLE ${tableRef(shadow.target)} RENAME TO ${sql.id(live.table)}`.execute(trx)
    const newOid = (await tableOid(trx, live))!
    const notes = await applyDressing(trx, live, newOid, record.columns, dressing)
    notes.push(
      ...(await reattachReaders(
        trx,
        catalog,
        options.configViews,
        { view: name, table: live, oid: newOid, columns: record.columns, oldColumns: row.columns },
        readers,
      )),
    )

    await sql`DELETE FROM ${sql.id(catalog, 'view_sources')} WHERE view = ${name}`.execute(trx)
    for (const source of record.sources) {
      await sql`
        INSERT INTO ${sql.id(catalog, 'view_sources')}
          (view, position, source_oid, source_schema, source_table, mapping, descendants,
           mapped_columns)
        VALUES (${name}, ${source.position}, ${source.oid}::int8::oid, ${source.schema},
                ${source.table}, ${source.mapping}, ${descendantsArray(source.descendants)}::oid[],
                ${source.mappedColumns ? JSON.stringify(source.mappedColumns) : null}::jsonb)`.execute(
        trx,
      )
    }
    await sql`
      UPDATE ${sql.id(catalog, 'views')}
      SET id = rebuild_id, definition_hash = rebuild_hash, key_columns = rebuild_key_columns,
          columns = rebuild_columns, partitions = coalesce(rebuild_partitions, 1), state = 'ready', state_reason = NULL,
          backfill_checkpoint = NULL, updated_at = now()
      WHERE name = ${name}`.execute(trx)
    await clearRebuild(trx, catalog, name)
    return notes
  })
  // Counted once committed: a swap that rolled back applied nothing.
  for (const counts of applied) options.onBatch(counts)
  return notes
}

/** A rebuild recorded before the schema watch has no descendants: NULL, the next check records them. */
function descendantsArray(descendants: readonly string[] | undefined): string | null {
  return descendants ? `{${descendants.join(',')}}` : null
}
