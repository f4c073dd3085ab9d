import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, sql } from 'kysely'
import type { RunCounts } from '../../catalog/runs.js'
import { UsageError, ViewRunError } from '../../errors/matview-error.js'
import type { StopReason } from '../../runner/kind-runner.js'
import type { Logger } from '../../runner/logger.js'
import type { DeclarativeView } from '../../views/declarative.js'
import type { ViewDefinition } from '../../views/view-definition.js'
import { type BatchCounts, batchError } from '../apply-batch.js'
import { fillTable } from '../fill-table.js'
import { installCapture } from '../install-capture.js'
import { KeyError } from '../key-error.js'
import { displayName, tableRef } from '../names.js'
import { postgresError } from '../postgres-errors.js'
import { retireCapture } from '../retire-capture.js'
import type { ViewRuntime } from '../view-runtime.js'
import { definitionHash } from '../view-sql.js'
import { catchUp } from './catch-up.js'
import { abandonRebuild, discardRebuild } from './discard-rebuild.js'
import {
  type RebuildRecord,
  type RebuildRow,
  readRebuildRow,
  rebuildCheckpointStore,
  shadowRuntime,
  tableOid,
} from './rebuild-record.js'
import { startRebuild } from './start-rebuild.js'
import { swapIn } from './swap.js'
import { refuseBlockedSwap } from './swap-blockers.js'

/** How long the swap waits for its locks before it tries again, and how many times it tries. */
export const REBUILD_LOCK_TIMEOUT_MS = 3000
export const REBUILD_SWAP_ATTEMPTS = 5

/** What rebuilding one view works with; the caller holds the view's lock on `conn`. */
export interface RebuildContext {
  conn: Kysely<any>
  catalog: string
  /** Every view in the config: the ones that read this view's table are re-attached. */
  configViews: readonly ViewDefinition[]
  batchSize: number
  lockTimeoutMs: number
  /** How many times the swap is tried when it cannot get its locks in time. */
  swapAttempts: number
  logger: Logger
  counts: RunCounts
  notes: string[]
  progress(done: number, total: number): void
  shouldStop(): StopReason | undefined
}

/**
 * Rebuilds a declarative view from its definition without taking it away from its readers
 * (DESIGN, Rebuild): a shadow target filled in key ranges while a new change log collects the
 * writes, caught up from that log, then swapped in by one short transaction. Each step commits
 * on its own and is recorded, so a run that stops (time budget, signal, crash) is resumed by
 * the next one, or started over when the definition changed meanwhile. Returns why it stopped
 * early, or the rows in the new table.
 */
export async function rebuildView(
  view: DeclarativeView,
  ctx: RebuildContext,
): Promise<{ stop?: StopReason; rows?: number }> {
  const { conn, catalog } = ctx
  const row = await readRebuildRow(conn, catalog, view.name)
  if (!row?.target) {
    throw new UsageError(
      `view "${view.name}" has not been created yet; run "matview update" to create it`,
    )
  }
  if (row.state === 'building') {
    throw new UsageError(
      `view "${view.name}" is still being created (its backfill has not finished); run "matview update" to finish it`,
    )
  }
  const liveOid = await tableOid(conn, row.target)
  if (!liveOid) {
    throw new ViewRunError(
      view.name,
      `its table "${displayName(row.target)}" is gone; run "matview drop ${view.name}", and update creates the view again`,
    )
  }
  await refuseBlockedSwap(conn, catalog, view.name, row.target, liveOid)

  const { record, fresh } = await prepare(view, row, ctx)
  // Before the fill reads a row (DESIGN, Backfill); a rebuild resumed after it stopped
  // half-way installs the rest. One source per transaction: see install-capture.ts.
  await installCapture(conn, catalog, view, record.id, record.sources, {
    shouldStop: ctx.shouldStop,
  }).catch(async (error) => {
    // A rebuild this run started is given up, as when its one transaction failed: the view
    // keeps serving its table, and is not left `rebuilding`.
    if (!fresh) throw error
    await conn.transaction().execute((trx) => abandonRebuild(trx, catalog, view.name))
    await retire(ctx)
    const pgError = postgresError(error)
    if (!pgError) throw error
    throw new ViewRunError(view.name, `starting the rebuild failed: ${pgError.message}`, {
      cause: error,
    })
  })
  const shadow = shadowRuntime(conn, catalog, view, record)
  if (record.checkpoint?.method !== 'done') {
    const stop = await fill(view, shadow, ctx)
    if (stop) return { stop }
  }
  ctx.logger.debug(`view "${view.name}": applying the changes made during the rebuild`)
  const onBatch = (counts: BatchCounts) => {
    ctx.counts.batches++
    ctx.counts.inserted += counts.inserted
    ctx.counts.updated += counts.updated
    ctx.counts.deleted += counts.deleted
  }
  const stop = await catchUp(conn, shadow, {
    batchSize: ctx.batchSize,
    byKey: keyLocal(view),
    shouldStop: ctx.shouldStop,
    onBatch,
  })
  if (stop) return { stop }
  ctx.notes.push(...(await swap(shadow, keyLocal(view), ctx, onBatch)), 'rebuilt')
  await retire(ctx)
  const { rows } = await sql<{ n: string }>`
    SELECT count(*) AS n FROM ${tableRef(row.target)}`.execute(conn)
  return { rows: Number(rows[0]!.n) }
}

/**
 * The rebuild to carry on: the one in progress if it is for this definition, else a new one
 * (`fresh`).
 */
async function prepare(
  view: DeclarativeView,
  row: RebuildRow,
  ctx: RebuildContext,
): Promise<{ record: RebuildRecord; fresh: boolean }> {
  const current = row.rebuild
  if (current) {
    const shadowThere = (await tableOid(ctx.conn, current.shadow)) !== undefined
    const sameDefinition = current.hash === definitionHash(ctx.conn, view)
    if (sameDefinition && !current.stale && shadowThere) {
      ctx.notes.push('resumed')
      return { record: current, fresh: false }
    }
    const why =
      current.stale ??
      (sameDefinition ? 'its new table was gone' : 'the definition changed since it started')
    ctx.notes.push(`started over: ${why}`)
  }
  ctx.logger.debug(`view "${view.name}": creating the new table and log`)
  const record = await ctx.conn.transaction().execute(async (trx) => {
    if (current) await discardRebuild(trx, ctx.catalog, view.name)
    return startRebuild(trx, ctx.catalog, view, row.target!).catch((error) => {
      const pgError = postgresError(error)
      if (!pgError) throw error
      throw new ViewRunError(view.name, `starting the rebuild failed: ${pgError.message}`, {
        cause: error,
      })
    })
  })
  if (current) await retire(ctx)
  return { record, fresh: true }
}

/** Removes the capture no view uses any more (the replaced or discarded one). */
async function retire(ctx: RebuildContext): Promise<void> {
  for (const left of await retireCapture(ctx.conn, ctx.catalog, { shouldStop: ctx.shouldStop }))
    ctx.logger.info(`left for a later run: ${left}`)
}

async function fill(
  view: DeclarativeView,
  shadow: ViewRuntime,
  ctx: RebuildContext,
): Promise<StopReason | undefined> {
  ctx.logger.debug(`view "${view.name}": filling the new table`)
  try {
    return await fillTable(shadow, view, ctx, rebuildCheckpointStore(ctx.catalog, view.name))
  } catch (error) {
    // A duplicate or NULL key is the new definition's fault: keep nothing of the rebuild; the
    // view keeps serving what it had (DESIGN, invariant 4).
    if (error instanceof KeyError) {
      await ctx.conn.transaction().execute((trx) => abandonRebuild(trx, ctx.catalog, view.name))
      await retire(ctx)
      throw new KeyError(
        view.name,
        `${error.detail}; the rebuild was given up and the view keeps its rows from before`,
        { cause: error },
      )
    }
    throw error
  }
}

/** lock_not_available, deadlock_detected: someone held a lock the swap needs; try again. */
const LOCK_CODES = new Set(['55P03', '40P01'])

/** Keys of the view may be recomputed one by one: not for a view kept by rebuilds. */
function keyLocal(view: DeclarativeView): boolean {
  return view.strategy !== 'rebuild'
}

async function swap(
  shadow: ViewRuntime,
  byKey: boolean,
  ctx: RebuildContext,
  onBatch: (counts: BatchCounts) => void,
): Promise<string[]> {
  const options = {
    catalog: ctx.catalog,
    configViews: ctx.configViews,
    batchSize: ctx.batchSize,
    lockTimeoutMs: ctx.lockTimeoutMs,
    byKey,
    onBatch,
  }
  for (let attempt = 1; ; attempt++) {
    try {
      ctx.logger.debug(`view "${shadow.name}": swapping the new table in (attempt ${attempt})`)
      return await swapIn(ctx.conn, shadow, options)
    } catch (error) {
      if (!LOCK_CODES.has(postgresError(error)?.code ?? '')) {
        throw batchError(shadow, 'swapping the new table in', error)
      }
      if (attempt >= ctx.swapAttempts || ctx.shouldStop()) {
        throw new ViewRunError(
          shadow.name,
          `the swap could not get its locks within ${ctx.lockTimeoutMs}ms, ${attempt} time${attempt > 1 ? 's' : ''} (a long query or transaction on the table or a source holds them); the new table is kept: run "matview rebuild ${shadow.name}" again to finish`,
          { cause: error },
        )
      }
      ctx.logger.info(`view "${shadow.name}": the swap waited too long for a lock; trying again`)
      // Readers queued behind the failed attempt go first; the log is caught up meanwhile.
      await sleep(250 * attempt)
      await catchUp(ctx.conn, shadow, { batchSize: ctx.batchSize, byKey, onBatch })
    }
  }
}
