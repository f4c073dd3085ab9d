import { type Kysely, sql } from 'kysely'
import { recordPartitionRun } from '../catalog/runs.js'
import { ViewRunError } from '../errors/matview-error.js'
import type { KindRunner, RunContext, StopReason } from '../runner/kind-runner.js'
import type { DeclarativeView } from '../views/declarative.js'
import { applyKeys, claimKeys, inboxRows, resolveStaged } from './apply-batch.js'
import { acceptPrintedObjects } from './check-printed-objects.js'
import { burstInInbox, chooseRebuild } from './choose-strategy.js'
import { createView, PRINTED_STATE_REASON } from './create-view.js'
import { discardUnfinishedView } from './drop-view.js'
import { fillTable } from './fill-table.js'
import { installCapture, recordedSources } from './install-capture.js'
import { KeyError } from './key-error.js'
import { describeKey, keyColumns } from './key-sql.js'
import { partitionLockKey, tableRef } from './names.js'
import { pendingWork } from './pending.js'
import { postgresError, privilegeHint } from './postgres-errors.js'
import {
  REBUILD_LOCK_TIMEOUT_MS,
  REBUILD_SWAP_ATTEMPTS,
  rebuildView,
} from './rebuild/rebuild-view.js'
import { retireCapture } from './retire-capture.js'
import { planRun } from './run-plan.js'
import { checkSources } from './schema-check.js'
import { applyIsolating } from './set-aside.js'
import { loadViewRuntime, partitionRuntime, type ViewRuntime } from './view-runtime.js'
import { definitionHash } from './view-sql.js'

/**
 * Runs a declarative view (DESIGN, the declarative algorithm): create what is missing, finish
 * the backfill, then apply pending keys batch by batch until the log is empty or the run must
 * stop. Everything happens on the connection that holds the view's lock.
 */
export const declarativeRunner: KindRunner<DeclarativeView> = {
  async run(view, ctx) {
    let runtime = await loadViewRuntime(ctx.conn, ctx.schema, view)
    const hash = definitionHash(ctx.conn, view)
    const planOf = (r: ViewRuntime | undefined) => viewPlan(view, r, hash)
    if (ctx.lockMode === 'shared') {
      // The lock was taken shared only for a ready partitioned view (src/runner/view-lock.ts).
      if (!runtime) throw new ViewRunError(view.name, 'internal: shared lock on a view not created')
      runtime = await checkSchema(view, runtime, ctx)
      checkRunnable(view, runtime, hash)
      return applyPartitions(runtime, view, ctx)
    }
    if (runtime?.state === 'building' && runtime.stateReason === PRINTED_STATE_REASON) {
      // Applied from "matview sql" by the user's own tool: checked before anything uses it.
      const printed = runtime
      await ctx.conn
        .transaction()
        .execute((trx) => acceptPrintedObjects(trx, ctx.schema, view, printed))
      ctx.notes.push('objects from "matview sql" checked')
      runtime = { ...runtime, stateReason: null }
    }
    // Objects from "matview sql" are checked above, as printed; then, as for every view, the
    // sources as they are now.
    if (runtime) runtime = await checkSchema(view, runtime, ctx)
    if (planOf(runtime).action === 'restart') {
      // Never served: start again from the new definition rather than ask for a rebuild.
      await discard(ctx, runtime!)
      ctx.notes.push('definition changed while building: started again')
      runtime = undefined
    }
    let created = false
    if (!runtime) {
      created = true
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
    if (planOf(runtime).action === 'backfill') {
      // Before the backfill reads a row; a run that stopped half-way installs the rest.
      const sources = await recordedSources(ctx.conn, ctx.schema, view.name)
      const building = runtime
      await installCapture(ctx.conn, ctx.schema, view, runtime.id, sources, {
        shouldStop: ctx.shouldStop,
      }).catch(async (error) => {
        // A view this run created keeps nothing of it, as when its one transaction failed.
        if (!created) throw error
        await discard(ctx, building)
        const pgError = postgresError(error)
        if (!pgError) throw error
        const message = `creating the view failed: ${pgError.message}${privilegeHint(pgError)}`
        throw new ViewRunError(view.name, message, { cause: error })
      })
    }
    if (planOf(runtime).action === 'finish-rebuild') {
      // A rebuild for the same definition (an earlier update's choice, or a rebuild after a
      // TRUNCATE) that stopped half-way: finish it, as `matview rebuild` would.
      ctx.notes.push('finishing the rebuild an earlier run started')
      const stop = await rebuildInRun(view, ctx)
      if (stop) return stop
      runtime = (await loadViewRuntime(ctx.conn, ctx.schema, view))!
    }
    checkRunnable(view, runtime, hash)
    if (planOf(runtime).action === 'backfill') {
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
    const plan = planOf(runtime)
    if (plan.action === 'rebuild' && plan.work === 'always') {
      // Kept by rebuilds only, and marked for one (a source was truncated): no key to wait for.
      ctx.notes.push(`rebuilt: ${runtime.stateReason ?? 'it needed a rebuild'} (strategy rebuild)`)
      return rebuildInRun(view, ctx)
    }
    // A view kept by rebuilds only rebuilds when a key is pending (update.ts gives its run the
    // strategy `rebuild` whatever the config says; this holds for any caller).
    return applyPending(
      runtime,
      view,
      plan.action === 'rebuild' ? { ...ctx, strategy: 'rebuild' } : ctx,
    )
  },

  async pending(view, db, schema) {
    const runtime = await loadViewRuntime(db, schema, view)
    if (!runtime) return { total: 0, detail: { notCreated: 1 }, lagSeconds: null }
    return pendingWork(db, runtime)
  },
}

/**
 * A source replaced, altered or given a partition since the last run is repaired, or marks the
 * view (DESIGN, the schema is watched): one statement per run. Returns the runtime as it is now.
 */
async function checkSchema(
  view: DeclarativeView,
  runtime: ViewRuntime,
  ctx: RunContext,
): Promise<ViewRuntime> {
  const changed = await checkSources(ctx.conn, ctx.schema, view.name, true)
  if (changed.length === 0) return runtime
  ctx.logger.debug(`view "${view.name}": its sources changed: ${changed.join('; ')}`)
  return (await loadViewRuntime(ctx.conn, ctx.schema, view)) ?? runtime
}

async function discard(ctx: RunContext, runtime: ViewRuntime): Promise<void> {
  await ctx.conn.transaction().execute((trx) => discardUnfinishedView(trx, ctx.schema, runtime))
  await retireInRun(ctx)
}

/** Removes capture no view uses any more; what a long transaction kept is left for later. */
async function retireInRun(ctx: RunContext): Promise<void> {
  for (const left of await retireCapture(ctx.conn, ctx.schema, { shouldStop: ctx.shouldStop }))
    ctx.logger.info(`left for a later run: ${left}`)
}

/** What a run of the view does (run-plan.ts decides for every caller). */
function viewPlan(view: DeclarativeView, runtime: ViewRuntime | undefined, hash: string) {
  return planRun(
    {
      view: view.name,
      state: runtime?.state,
      sameDefinition: runtime?.definitionHash === hash,
      stateReason: runtime?.stateReason ?? null,
    },
    { rebuildOnly: view.strategy === 'rebuild' },
  )
}

/** Refuses a view whose target no longer matches its definition or was truncated under it. */
function checkRunnable(view: DeclarativeView, runtime: ViewRuntime, hash: string): void {
  const { refusal } = viewPlan(view, runtime, hash)
  if (refusal)
    throw new ViewRunError(view.name, refusal.reason, refusal.code ? { code: refusal.code } : {})
}

/** Staged rows mapped per statement: bounded so each statement stays short. */
const STAGE_CHUNK = 10_000

/** What a partition's applier has done with it over the slices of one run. */
interface PartitionTally {
  runtime: ViewRuntime
  /** Log rows deleted since its last vacuum. */
  cleared: number
  /** Keys applied. */
  keys: number
  /** Staged rows mapped (to keys of any partition). */
  staged: number
  /** Where its last slice stopped in key order: the next one goes on from there. */
  after: string[] | undefined
}

/**
 * Applies pending keys in one pass over the log in key order, or until the run must stop.
 * Keys written behind the pass wait for the next run: a run that wrapped around to them would
 * chase a hot key for as long as writers write (a worker's run of a view keyed by branch, under
 * pgbench, never ended and every other view waited). `partition` claims and
 * applies from one partition of a partitioned view (the caller holds its lock); staged rows
 * are still mapped through the whole view's log, whose keys may go to any partition.
 */
async function applyPending(
  view: ViewRuntime,
  definition: DeclarativeView,
  ctx: RunContext,
  partition?: PartitionTally,
): Promise<StopReason | undefined> {
  const claimFrom = partition?.runtime ?? view
  let after: string[] | undefined = partition?.after
  let done = 0
  let total: number | undefined
  let strategyChosen = ctx.strategy === 'incremental'
  let cleared = 0
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
        if (partition) partition.staged += resolved
        if (resolved < STAGE_CHUNK) break
      }
    }
    if (!strategyChosen && ctx.strategy === 'auto' && burstInInbox(view)) {
      // Before the claim would move the burst into the log (see burstInInbox).
      strategyChosen = true
      const why = await rebuildReason(view, definition, ctx)
      if (why) {
        ctx.notes.push(why)
        return rebuildInRun(definition, ctx)
      }
    }
    const claimed = { moved: 0 }
    const keys = await claimKeys(ctx.conn, claimFrom, ctx.batchSize, after, claimed)
    // Moved inbox rows are dead rows too, for the vacuum after a large drain.
    cleared += claimed.moved
    if (partition) partition.cleared += claimed.moved
    if (keys.length === 0) {
      // Past the last key: the pass is done (a partition's slices go round instead).
      if ((after === undefined || !partition) && (staged === 0 || !partition)) {
        if (!partition && cleared >= VACUUM_AFTER_ROWS) await vacuumLog(view, ctx)
        return undefined
      }
      after = undefined
      continue
    }
    if (!strategyChosen) {
      strategyChosen = true
      // Only a full first batch can mean a large share of the view is pending.
      if (ctx.strategy === 'rebuild' || keys.length === ctx.batchSize) {
        const why = await rebuildReason(view, definition, ctx)
        if (why) {
          ctx.notes.push(why)
          return rebuildInRun(definition, ctx)
        }
      }
    }
    // Counting the whole log costs a scan (20 ms on a large log): only for a progress bar, and
    // only when the run has more than one batch.
    if (total === undefined && ctx.tracksProgress && keys.length === ctx.batchSize)
      total = await countPending(ctx.conn, view)
    const began = performance.now()
    const counts = ctx.isolateFailures
      ? await applyIsolating(ctx.conn, ctx.schema, claimFrom, keys, (key, error) => {
          ctx.notes.push(`set aside ${describeKey(view.key, key)}`)
          ctx.logger.warn(
            `view "${view.name}": key ${describeKey(view.key, key)} set aside (matview retry ${view.name}): ${error}`,
          )
        })
      : await applyKeys(ctx.conn, claimFrom, keys)
    ctx.onBatch?.(performance.now() - began)
    ctx.counts.batches++
    ctx.counts.inserted += counts.inserted
    ctx.counts.updated += counts.updated
    ctx.counts.deleted += counts.deleted
    cleared += counts.cleared ?? 0
    done += keys.length
    if (partition) {
      partition.cleared += counts.cleared ?? 0
      partition.keys += keys.length
    }
    if (total !== undefined) ctx.progress(done, Math.max(total, done))
    after = keys.at(-1)
    if (keys.length < ctx.batchSize) {
      if (!partition) {
        if (cleared >= VACUUM_AFTER_ROWS) await vacuumLog(view, ctx)
        return undefined
      }
      after = undefined
    }
    if (partition) partition.after = after
  }
}

/**
 * How long a runner applies one partition before it lets it go and moves to the next: with
 * more partitions than runners, every runner keeps finding a free partition until the last
 * ones are drained, instead of the first runners to finish standing idle.
 */
const SLICE_MS = 500

/**
 * Applies a partitioned view under its shared lock (src/runner/view-lock.ts): goes round the
 * partitions, starting at a random one so runners spread, and applies each one that no other
 * runner holds, under the partition's own lock, for a slice of time; skips those another runner
 * holds (it applies them). Stops after a round that applied nothing. Every slice that applied
 * batches is recorded in the run history (`run_partitions`) with the database's clock at both
 * ends, taken while the partition's lock is held.
 */
async function applyPartitions(
  view: ViewRuntime,
  definition: DeclarativeView,
  ctx: RunContext,
): Promise<StopReason | undefined> {
  const { adapter } = ctx.database
  const n = view.partitions
  const tallies: PartitionTally[] = Array.from({ length: n }, (_, k) => ({
    runtime: partitionRuntime(view, k),
    cleared: 0,
    keys: 0,
    staged: 0,
    after: undefined,
  }))
  const first = Math.floor(Math.random() * n)
  const order = tallies.map((_, i) => (first + i) % n)
  const total = ctx.tracksProgress ? await countPending(ctx.conn, view) : undefined
  const applied = new Set<number>()
  const slice = (until: number): RunContext => ({
    ...ctx,
    // The automatic strategy was decided before the lock was shared.
    strategy: 'incremental',
    tracksProgress: false,
    shouldStop: () => ctx.shouldStop() ?? (Date.now() >= until ? 'batch limit' : undefined),
  })
  try {
    while (true) {
      let worked = false
      for (const k of order) {
        const stop = ctx.shouldStop()
        if (stop) return stop
        const key = partitionLockKey(ctx.schema, view.name, k)
        if (!(await adapter.tryLock(ctx.conn, key))) continue
        try {
          const tally = tallies[k]!
          const { rows } = await sql<{ at: string; pending: boolean }>`
            SELECT pg_catalog.clock_timestamp()::text AS at,
                   EXISTS (SELECT 1 FROM ${tableRef(tally.runtime.objects.log)})
                   OR EXISTS (SELECT 1 FROM ${inboxRows(view)} AS i) AS pending`.execute(ctx.conn)
          if (!rows[0]!.pending && view.staged.length === 0) continue
          const before = { batches: ctx.counts.batches, staged: tally.staged }
          let stop: StopReason | undefined
          try {
            stop = await applyPending(view, definition, slice(Date.now() + SLICE_MS), tally)
          } finally {
            const batches = ctx.counts.batches - before.batches
            if (batches > 0) {
              applied.add(k)
              await recordPartitionRun(ctx.conn, ctx.schema, ctx.runId, k, rows[0]!.at, batches)
            }
            // Another round is needed after batches, after staged rows were mapped (their keys
            // may be in a partition this round passed), or when the slice ran out of time.
            if (batches > 0 || tally.staged > before.staged) worked = true
          }
          if (stop !== undefined) worked = true
          if (stop === undefined && tally.cleared >= VACUUM_AFTER_ROWS) {
            await vacuumLog(tally.runtime, ctx)
            tally.cleared = 0
          }
          if (total !== undefined) {
            const done = tallies.reduce((sum, t) => sum + t.keys, 0)
            ctx.progress(done, Math.max(total, done))
          }
        } finally {
          await adapter.unlock(ctx.conn, key).catch(() => {})
        }
      }
      if (!worked) return undefined
    }
  } finally {
    if (applied.size > 0)
      ctx.notes.push(
        `applied partition${applied.size > 1 ? 's' : ''} ${[...applied].sort((a, b) => a - b).join(', ')} of ${n}`,
      )
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

/**
 * A drain that deleted this many log and inbox rows vacuums both: the log's dead index entries
 * would otherwise slow every claim's index scan (3 ms instead of 0.3 ms on an empty log), and
 * the inbox's dead rows every move, which reads it whole, until autovacuum came by.
 */
const VACUUM_AFTER_ROWS = 10_000

async function vacuumLog(view: ViewRuntime, ctx: RunContext): Promise<void> {
  // Outside any transaction (VACUUM refuses one); the run's connection holds none here. The
  // inbox too: each claim's move reads it whole, dead rows and all.
  const tables = view.hasInbox ? [view.objects.log, view.objects.inbox] : [view.objects.log]
  await sql`VACUUM ${sql.join(tables.map(tableRef))}`.execute(ctx.conn).catch((error) => {
    ctx.logger.debug(`view "${view.name}": vacuuming the change log failed: ${String(error)}`)
  })
}

/** Why this run rebuilds the view instead of applying its keys, or undefined to apply them. */
async function rebuildReason(
  view: ViewRuntime,
  definition: DeclarativeView,
  ctx: RunContext,
): Promise<string | undefined> {
  if (ctx.strategy === 'rebuild')
    return definition.strategy === 'rebuild'
      ? "rebuilt instead of applied (the view's strategy rebuild)"
      : 'rebuilt instead of applied (--strategy rebuild)'
  const choice = await chooseRebuild(ctx.conn, view, ctx.rebuildShare)
  ctx.logger.debug(
    `view "${view.name}": ${choice.pendingKeys}${choice.rebuild ? '+' : ''} keys pending of about ${choice.targetRows} rows: ${choice.rebuild ? 'rebuild' : 'incremental'}`,
  )
  if (!choice.rebuild) return undefined
  const share =
    choice.targetRows > 0 ? Math.round((100 * choice.pendingKeys) / choice.targetRows) : 100
  return `rebuilt: ${choice.pendingKeys.toLocaleString('en-US')}+ keys pending, ${share}%+ of the view, cost more to apply one by one (strategy auto)`
}

/** Rebuilds the view in this run, under the lock the run holds (DESIGN, Rebuild). */
async function rebuildInRun(
  view: DeclarativeView,
  ctx: RunContext,
): Promise<StopReason | undefined> {
  const { stop } = await rebuildView(view, {
    conn: ctx.conn,
    catalog: ctx.schema,
    configViews: ctx.configViews,
    batchSize: ctx.batchSize,
    lockTimeoutMs: REBUILD_LOCK_TIMEOUT_MS,
    swapAttempts: REBUILD_SWAP_ATTEMPTS,
    logger: ctx.logger,
    counts: ctx.counts,
    notes: ctx.notes,
    progress: ctx.progress,
    shouldStop: ctx.shouldStop,
  })
  return stop
}
