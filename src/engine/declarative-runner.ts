import { type Kysely, sql } from 'kysely'
import { ViewRunError } from '../errors/matview-error.js'
import type { KindRunner, RunContext, StopReason } from '../runner/kind-runner.js'
import type { DeclarativeView } from '../views/declarative.js'
import { applyKeys, claimKeys, resolveStaged } from './apply-batch.js'
import { backfill, type CheckpointStore } from './backfill.js'
import { createView } from './create-view.js'
import { discardUnfinishedView } from './drop-view.js'
import { findTable } from './inspect-definition.js'
import { KeyError } from './key-error.js'
import { keyColumns } from './key-sql.js'
import { tableRef } from './names.js'
import { pendingWork } from './pending.js'
import { postgresError, privilegeHint } from './postgres-errors.js'
import { loadViewRuntime, type ViewRuntime } from './view-runtime.js'
import { definitionHash, isQueryMapping, sourceNames } from './view-sql.js'

/**
 * Runs a declarative view (DESIGN, the declarative algorithm): create what is missing, finish
 * the backfill, then apply pending keys batch by batch until the log is empty or the run must
 * stop. Everything happens on the connection that holds the view's lock.
 */
export const declarativeRunner: KindRunner<DeclarativeView> = {
  async run(view, ctx) {
    let runtime = await loadViewRuntime(ctx.conn, ctx.schema, view)
    if (
      runtime?.state === 'building' &&
      runtime.definitionHash !== definitionHash(ctx.conn, view)
    ) {
      // Never served: start again from the new definition rather than ask for a rebuild.
      await discard(ctx, runtime)
      ctx.notes.push('definition changed while building: started again')
      runtime = undefined
    }
    if (!runtime) {
      ctx.logger.debug(`view "${view.name}": creating`)
      await ctx.conn.transaction().execute(async (trx) => {
        await createView(trx, ctx.schema, view).catch((error) => {
          const pgError = postgresError(error)
          if (!pgError) throw error
          const message = `creating the view failed: ${pgError.message}${privilegeHint(pgError)}`
          throw new ViewRunError(view.name, message, {
            cause: error,
          })
        })
      })
      runtime = (await loadViewRuntime(ctx.conn, ctx.schema, view))!
      ctx.notes.push('created')
    }
    checkRunnable(ctx.conn, view, runtime)
    if (runtime.state === 'building') {
      ctx.logger.debug(`view "${view.name}": backfilling`)
      let stop: StopReason | undefined
      try {
        stop = await fillTable(runtime, view, ctx)
      } catch (error) {
        // A duplicate or NULL key is the definition's fault: keep nothing of a view that was
        // never ready, so the fixed definition starts clean (DESIGN, invariant 4).
        if (error instanceof KeyError) {
          await discard(ctx, runtime)
          throw new KeyError(view.name, `${error.detail}; nothing of the view was kept`, {
            cause: error,
          })
        }
        throw error
      }
      if (stop) return stop
      ctx.notes.push('backfilled')
      runtime = { ...runtime, state: 'ready', backfillCheckpoint: null }
    }
    if (ctx.createOnly) return undefined
    return applyPending(runtime, ctx)
  },

  async pending(view, db, schema) {
    const runtime = await loadViewRuntime(db, schema, view)
    if (!runtime) return { total: 0, detail: { notCreated: 1 }, lagSeconds: null }
    return pendingWork(db, runtime)
  },
}

async function discard(ctx: RunContext, runtime: ViewRuntime): Promise<void> {
  await ctx.conn.transaction().execute((trx) => discardUnfinishedView(trx, ctx.schema, runtime))
}

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
  })
}

/** Refuses a view whose target no longer matches its definition or was truncated under it. */
function checkRunnable(db: Kysely<any>, view: DeclarativeView, runtime: ViewRuntime): void {
  // First: whatever else is true, the rebuild owns the view until it swaps its table in.
  if (runtime.state === 'rebuilding') {
    throw new ViewRunError(
      view.name,
      `a rebuild was started and has not finished; run "matview rebuild ${view.name}" to finish it (update leaves it untouched)`,
    )
  }
  const hash = definitionHash(db, view)
  if (runtime.definitionHash !== hash) {
    throw new ViewRunError(
      view.name,
      `its definition changed since the view was created; run "matview rebuild ${view.name}" to rebuild it from the new definition (update leaves it untouched)`,
      { code: 'DEFINITION_CHANGED' },
    )
  }
  if (runtime.state === 'needs_rebuild') {
    throw new ViewRunError(
      view.name,
      `needs a rebuild${runtime.stateReason ? ` (${runtime.stateReason})` : ''}; run "matview rebuild ${view.name}"`,
    )
  }
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

/** Staged rows mapped per statement: bounded so each statement stays short. */
const STAGE_CHUNK = 10_000

async function applyPending(view: ViewRuntime, ctx: RunContext): Promise<StopReason | undefined> {
  let after: string[] | undefined
  let done = 0
  let total: number | undefined
  while (true) {
    const stop = ctx.shouldStop()
    if (stop) return stop
    // Map every staged row before claiming, so a key that many changed rows map to is
    // recomputed once, not once per chunk (DESIGN, Claim: deduplicate across the whole log).
    let staged = 0
    for (const source of view.staged) {
      while (true) {
        const stop = ctx.shouldStop()
        if (stop) return stop
        const resolved = await resolveStaged(ctx.conn, view, source, STAGE_CHUNK)
        staged += resolved
        if (resolved < STAGE_CHUNK) break
      }
    }
    const keys = await claimKeys(ctx.conn, view, ctx.batchSize, after)
    if (keys.length === 0) {
      // Wrapped past the last key: start again from the first, unless nothing is left at all.
      if (after === undefined && staged === 0) return undefined
      after = undefined
      continue
    }
    // Counting the whole log costs a scan (20 ms on a large log): only for a progress bar, and
    // only when the run has more than one batch.
    if (total === undefined && ctx.tracksProgress && keys.length === ctx.batchSize)
      total = await countPending(ctx.conn, view)
    const counts = await applyKeys(ctx.conn, view, keys)
    ctx.counts.batches++
    ctx.counts.inserted += counts.inserted
    ctx.counts.updated += counts.updated
    ctx.counts.deleted += counts.deleted
    done += keys.length
    if (total !== undefined) ctx.progress(done, Math.max(total, done))
    after = keys.at(-1)
    if (keys.length < ctx.batchSize) after = undefined
  }
}

async function countPending(db: Kysely<any>, view: ViewRuntime): Promise<number> {
  const { rows } = await sql<{ n: string }>`
    SELECT count(*) AS n
    FROM (SELECT DISTINCT ${keyColumns(view.key)} FROM ${tableRef(view.objects.log)}) AS k`.execute(
    db,
  )
  return Number(rows[0]!.n)
}
