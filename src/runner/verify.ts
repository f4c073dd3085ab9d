import type { Kysely } from 'kysely'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import {
  REBUILD_LOCK_TIMEOUT_MS,
  REBUILD_SWAP_ATTEMPTS,
  rebuildView,
} from '../engine/rebuild/rebuild-view.js'
import { planRun } from '../engine/run-plan.js'
import { type Comparison, compareView } from '../engine/verify-view.js'
import { loadViewRuntime, type ViewRuntime } from '../engine/view-runtime.js'
import { definitionHash } from '../engine/view-sql.js'
import { errorMessage, UsageError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { Budget } from './budget.js'
import type { StopReason } from './kind-runner.js'
import { silentLogger } from './logger.js'
import { selectViews } from './update.js'

export interface VerifyOptions {
  /** Put the drifted keys in the change log and apply them (under the view's lock). */
  repair?: boolean
  /** First drifted keys reported per kind (missing, extra, different); default 5. */
  sample?: number
  /** Keys per repair batch (default: the config's `batchSize`). */
  batchSize?: number
  /** Target keys per range, fixed; by default each range is sized to take about a second. */
  rangeKeys?: number
  /** Time budget in milliseconds: views not reached, or not finished, are reported `partial`. */
  maxTime?: number
  /** Aborting it stops after the current key range (SIGINT/SIGTERM in the CLI). */
  signal?: AbortSignal
  /** Called as views start, as key ranges are compared, and as views end. */
  onProgress?: (event: VerifyProgressEvent) => void
}

export type VerifyProgressEvent =
  | { type: 'start'; view: string }
  | { type: 'progress'; view: string; done: number; total: number }
  | { type: 'end'; view: string; result: VerifyResult }

/**
 * `equal`: the target equals the query. `drift`: it does not (see the counts). `repaired`: it
 * did not, and every drifted key was applied. `not verified`: the view is not ready (see
 * `reason`). `partial`/`interrupted`: stopped before the last key range.
 */
export type VerifyOutcome =
  | 'equal'
  | 'drift'
  | 'repaired'
  | 'not verified'
  | 'partial'
  | 'interrupted'
  | 'failed'

/** One view's verification; the counts are there when its ranges were compared. */
export interface VerifyResult extends Partial<Comparison> {
  view: string
  outcome: VerifyOutcome
  reason?: string
  durationMs: number
  error?: string
  cause?: unknown
}

export interface VerifySummary {
  views: VerifyResult[]
  durationMs: number
}

const DEFAULT_SAMPLE = 5

/**
 * Compares declarative views with their queries (all of them when `names` is empty), one after
 * the other; see {@link compareView}. Naming an unknown or hand-written view throws before
 * anything runs; a view that fails is reported in its result and the others still run.
 */
export async function runVerify(
  database: Database,
  config: ResolvedConfig,
  names: string[],
  options: VerifyOptions = {},
): Promise<VerifySummary> {
  const started = Date.now()
  const selected = selectViews(config.views, names.length > 0 ? names : undefined)
  for (const view of selected) {
    if (names.length > 0 && view.kind !== 'declarative') {
      throw new UsageError(
        `view "${view.name}" is hand-written; verify compares declarative views (defineView) with their query`,
      )
    }
  }
  const views = selected.filter((v): v is DeclarativeView => v.kind === 'declarative')
  const budget = new Budget(options.maxTime, options.signal)
  const results: VerifyResult[] = []
  try {
    for (const view of views) {
      options.onProgress?.({ type: 'start', view: view.name })
      const result = await verifyOne(database, config, view, options, budget)
      results.push(result)
      options.onProgress?.({ type: 'end', view: view.name, result })
    }
  } finally {
    budget.dispose()
  }
  return { views: results, durationMs: Date.now() - started }
}

async function verifyOne(
  database: Database,
  config: ResolvedConfig,
  view: DeclarativeView,
  options: VerifyOptions,
  budget: Budget,
): Promise<VerifyResult> {
  const started = Date.now()
  const result = (outcome: VerifyOutcome, extra: Partial<VerifyResult> = {}): VerifyResult => ({
    view: view.name,
    outcome,
    ...extra,
    durationMs: Date.now() - started,
  })
  const early = budget.stopReason()
  if (early) return result(stopOutcome(early), { reason: `${early}, not started` })
  try {
    const load = async (db: Kysely<any>) => {
      const runtime = await loadViewRuntime(db, config.schema, view)
      const why = runtime ? notReady(db, view, runtime) : 'not created yet'
      return why || !runtime ? { why } : { runtime }
    }
    // A view kept by rebuilds is repaired by one: its keys cannot be recomputed one by one.
    const byRebuild = options.repair === true && view.strategy === 'rebuild'
    const compare = async (db: Kysely<any>) => {
      // Read on the connection that compares (under the view's lock, for a repair): a swap
      // that came before the lock changed the view's id, log and columns.
      const { runtime, why } = await load(db)
      if (!runtime) return result('not verified', { reason: why })
      const found = await compareView(db, runtime, {
        sample: options.sample ?? DEFAULT_SAMPLE,
        repair: options.repair === true && !byRebuild,
        batchSize: options.batchSize ?? config.batchSize,
        ...(options.rangeKeys !== undefined ? { rangeKeys: options.rangeKeys } : {}),
        shouldStop: () => budget.stopReason(),
        progress: (done, total) =>
          options.onProgress?.({ type: 'progress', view: view.name, done, total }),
      })
      const { stop, ...counts } = found
      const drifted = counts.missing.count + counts.extra.count + counts.different.count
      if (stop) return result(stopOutcome(stop), { reason: stop, ...counts })
      if (drifted === 0) return result('equal', counts)
      if (byRebuild) {
        const rebuilt = await rebuildView(view, {
          conn: db,
          catalog: config.schema,
          configViews: config.views,
          batchSize: options.batchSize ?? config.batchSize,
          lockTimeoutMs: REBUILD_LOCK_TIMEOUT_MS,
          swapAttempts: REBUILD_SWAP_ATTEMPTS,
          logger: silentLogger,
          counts: { inserted: 0, updated: 0, deleted: 0, batches: 0 },
          notes: [],
          progress: () => {},
          shouldStop: () => budget.stopReason(),
        })
        if (rebuilt.stop)
          return result(stopOutcome(rebuilt.stop), { reason: rebuilt.stop, ...counts })
        return result('repaired', { ...counts, repaired: drifted })
      }
      return result(counts.repaired === drifted ? 'repaired' : 'drift', counts)
    }
    // Comparing only reads, each range in one snapshot: no lock. Repairing writes the view,
    // which only its lock holder may do (DESIGN, one writer per view).
    // With a shutdown signal each query lets the event loop turn: a signal stops PGlite's ranges too.
    if (!options.repair) return await compare(budget.watch(database.db))
    // Refused before the lock when it is not ready, as without --repair.
    const before = await load(database.db)
    if (!before.runtime) return result('not verified', { reason: before.why })
    const key = { schema: config.schema, name: view.name }
    return await database.db.connection().execute(async (held) => {
      const conn = budget.watch(held)
      if (!(await database.adapter.tryLock(conn, key))) {
        const error = new UsageError(
          `view "${view.name}" is being updated or rebuilt by another runner; try --repair again when it is done`,
        )
        return result('failed', { error: error.message, cause: error })
      }
      try {
        return await compare(conn)
      } finally {
        await database.adapter.unlock(conn, key).catch(() => {})
      }
    })
  } catch (error) {
    if (budget.interrupted) return result('interrupted', { reason: 'interrupted' })
    return result('failed', { error: errorMessage(error), cause: error })
  }
}

/** Why a created view cannot be compared with its query now, or undefined when it can. */
function notReady(db: Kysely<any>, view: DeclarativeView, runtime: ViewRuntime) {
  const plan = planRun(
    {
      view: view.name,
      state: runtime.state,
      sameDefinition: runtime.definitionHash === definitionHash(db, view),
    },
    { rebuildOnly: view.strategy === 'rebuild' },
  )
  if (plan.comparable) return undefined
  switch (runtime.state) {
    case 'building':
      return 'building: its backfill has not finished; run "matview update"'
    case 'rebuilding':
      return `rebuilding: run "matview rebuild ${view.name}" to finish it`
    case 'needs_rebuild':
      return `needs rebuild${runtime.stateReason ? ` (${runtime.stateReason})` : ''}: run "matview rebuild ${view.name}"`
  }
  return `its definition changed since it was created: run "matview rebuild ${view.name}"`
}

function stopOutcome(stop: StopReason): VerifyOutcome {
  return stop === 'interrupted' ? 'interrupted' : 'partial'
}
