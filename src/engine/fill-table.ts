import type { Kysely } from 'kysely'
import type { RunContext, StopReason } from '../runner/kind-runner.js'
import type { DeclarativeView } from '../views/declarative.js'
import { backfill, type CheckpointStore } from './backfill.js'
import { findTable } from './inspect-definition.js'
import type { ViewRuntime } from './view-runtime.js'
import { isQueryMapping, sourceNames } from './view-sql.js'

/**
 * Backfills `runtime`'s table (a new view's target, or a rebuild's shadow with its own
 * checkpoint store), counting each range as a batch of inserted rows.
 */
export async function fillTable(
  runtime: ViewRuntime,
  view: DeclarativeView,
  ctx: Pick<RunContext, 'conn' | 'batchSize' | 'shouldStop' | 'progress' | 'counts'>,
  checkpoint?: CheckpointStore,
): Promise<StopReason | undefined> {
  return backfill(runtime, await backfillSources(ctx.conn, view), {
    conn: ctx.conn,
    batchSize: ctx.batchSize,
    shouldStop: ctx.shouldStop,
    progress: ctx.progress,
    onBatch: (rows) => {
      ctx.counts.batches++
      ctx.counts.inserted += rows
    },
    ...(checkpoint ? { checkpoint } : {}),
    oneSnapshot: view.strategy === 'rebuild',
  })
}

/** The column-map sources that feed the first key column, for the backfill's key ranges. */
export async function backfillSources(db: Kysely<any>, view: DeclarativeView) {
  const found: { oid: string; column: string }[] = []
  for (const name of sourceNames(view)) {
    const mapping = view.sources[name]!
    if (isQueryMapping(mapping)) continue
    const table = await findTable(db, name)
    const column = mapping[view.key[0]!]
    if (table && column) found.push({ oid: table.oid, column })
  }
  return found
}
