import type { RunCounts, RunOutcome } from '../catalog/runs.js'
import { registerView } from '../catalog/view-rows.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import { type Strategy, viewStrategy } from '../engine/choose-strategy.js'
import { retireCapture } from '../engine/retire-capture.js'
import { errorMessage, UsageError } from '../errors/matview-error.js'
import type { ViewDefinition } from '../views/view-definition.js'
import { Budget } from './budget.js'
import { formatRows } from './format-counts.js'
import type { PendingWork } from './kind-runner.js'
import { type Logger, silentLogger } from './logger.js'
import { runnerFor } from './runners.js'
import { acquireViewLock } from './view-lock.js'
import { dependenciesOf, orderViews } from './view-order.js'
import { withViewRun } from './view-run.js'

export interface UpdateOptions {
  /** Only these views (by name); default all, in dependency order. */
  views?: string[]
  /** Overrides the config's `batchSize`. */
  batchSize?: number
  /** The time budget for the whole run, in milliseconds. Work left over waits for the next run. */
  maxTime?: number
  /** The most batches per view. */
  maxBatches?: number
  /**
   * How declarative views apply their pending keys (default: the config's, else `auto`):
   * `incremental` batch by batch, `rebuild` a rebuild with swap, `auto` whichever costs less.
   */
  strategy?: Strategy
  /** Only create and backfill declarative views that are missing; apply no changes. */
  createOnly?: boolean
  /** Report what each view needs, write nothing. */
  dryRun?: boolean
  /** Wait for a view's lock instead of skipping a view another runner holds. */
  wait?: boolean
  /**
   * Apply a failing batch in halves and set aside the keys that fail alone (see
   * `matview retry`); the worker asks for it after a view failed several times in a row.
   */
  isolateFailures?: boolean
  /**
   * Record a run that found nothing to do by extending the previous run's row when that one
   * found nothing either, instead of adding a row (the worker: one row per idle stretch).
   */
  mergeIdleRuns?: boolean
  /** Aborting it stops the run after the current batch (SIGINT/SIGTERM in the CLI). */
  signal?: AbortSignal
  logger?: Logger
  /** Called after each batch that committed: the view and how long the batch took (metrics). */
  onBatch?: (view: string, ms: number) => void
  /** Called as views start, make progress and finish. */
  onProgress?: (event: ProgressEvent) => void
}

export type ProgressEvent =
  | { type: 'start'; view: string }
  | { type: 'progress'; view: string; done: number; total: number }
  | { type: 'end'; view: string; result: ViewResult }

export type ViewOutcome = RunOutcome | 'skipped' | 'dry-run'

/** What happened to one view in an `update`. */
export interface ViewResult extends RunCounts {
  view: string
  kind: ViewDefinition['kind']
  outcome: Exclude<ViewOutcome, 'running'>
  /** Why it stopped early or was skipped: `time budget`, `batch limit`, `running elsewhere`… */
  reason?: string
  durationMs: number
  error?: string
  /** The error itself, for `--verbose`. */
  cause?: unknown
  /** What else happened: `created`, `backfilled`. */
  notes?: string[]
  /** Work left (after a partial run) or needed (`--dry-run`). */
  pending?: PendingWork
}

export interface UpdateSummary {
  views: ViewResult[]
  durationMs: number
}

/** Runs `update` over the configured views: one after the other, each under its lock. */
export async function runUpdate(
  database: Database,
  config: ResolvedConfig,
  options: UpdateOptions = {},
): Promise<UpdateSummary> {
  const started = Date.now()
  const logger = options.logger ?? silentLogger
  const batchSize = options.batchSize ?? config.batchSize
  const selected = selectViews(config.views, options.views).filter(
    (v) => !options.createOnly || v.kind === 'declarative',
  )
  const budget = new Budget(options.maxTime, options.signal)
  const results: ViewResult[] = []
  try {
    if (!options.dryRun) {
      for (const kind of ['handwritten', 'declarative'] as const) {
        const ofKind = selected.filter((v) => v.kind === kind)
        const runner = runnerFor(kind)
        if (ofKind.length > 0 && runner.prepare)
          await runner.prepare(database, config.schema, ofKind, logger)
      }
    }
    for (const view of selected) {
      options.onProgress?.({ type: 'start', view: view.name })
      const result = options.dryRun
        ? await dryRunView(database, config, view, batchSize)
        : await runView(database, config, view, { ...options, batchSize, budget, logger })
      explainByUpstream(
        result,
        dependenciesOf(view, config.views),
        results,
        options.dryRun === true,
      )
      results.push(result)
      logResult(logger, result)
      options.onProgress?.({ type: 'end', view: view.name, result })
    }
    // Capture a drop, swap or discard could not remove yet (a source held by a long
    // transaction, or a process that died between the two steps).
    if (!options.dryRun && results.some((r) => r.kind === 'declarative')) {
      for (const left of await retireCapture(database.db, config.schema))
        logger.info(`left for a later run: ${left}`)
    }
  } finally {
    budget.dispose()
  }
  return { views: results, durationMs: Date.now() - started }
}

/** The views named by `--views`, in dependency order; an unknown name lists the known ones. */
export function selectViews(all: ViewDefinition[], names: string[] | undefined): ViewDefinition[] {
  const ordered = orderViews(all)
  if (!names || names.length === 0) return ordered
  const known = new Set(all.map((v) => v.name))
  const unknown = names.filter((n) => !known.has(n))
  if (unknown.length > 0) {
    const list =
      all.length > 0 ? all.map((v) => v.name).join(', ') : 'none: the config has no views'
    throw new UsageError(
      `unknown view${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => `"${n}"`).join(', ')}; known views: ${list}`,
      'UNKNOWN_VIEW',
    )
  }
  const wanted = new Set(names)
  return ordered.filter((v) => wanted.has(v.name))
}

/**
 * What the views a view reads did in this run changes what its own result means. A view
 * failing after one it reads failed (most often: that one's table was never created) says so
 * instead of "relation does not exist"; its own error stays in `cause` (`-v`). A dry run of a
 * view on a view counts only what is in its change log now: it says that more comes after the
 * upstream applies its own pending work.
 */
function explainByUpstream(
  result: ViewResult,
  upstream: string[],
  earlier: ViewResult[],
  dryRun: boolean,
): void {
  const before = earlier.filter((r) => upstream.includes(r.view))
  const failed = before.find((r) => r.outcome === 'failed')
  if (result.outcome === 'failed' && failed) {
    result.cause = result.cause ?? result.error
    result.error = `"${failed.view}", a view it reads, failed in this run; fix that one first (its error is on its own line)`
    return
  }
  if (!dryRun || result.outcome !== 'dry-run') return
  const busy = before.filter(
    (r) => r.pending && (r.pending.total > 0 || r.pending.detail.notCreated),
  )
  if (busy.length > 0)
    result.notes = [
      ...(result.notes ?? []),
      `more after ${busy.map((r) => `"${r.view}"`).join(', ')} appl${busy.length === 1 ? 'ies its' : 'y their'} pending work`,
    ]
}

async function dryRunView(
  database: Database,
  config: ResolvedConfig,
  view: ViewDefinition,
  batchSize: number,
): Promise<ViewResult> {
  const started = Date.now()
  const base = { view: view.name, kind: view.kind, inserted: 0, updated: 0, deleted: 0, batches: 0 }
  try {
    const pending = await runnerFor(view.kind).pending(
      view as never,
      database.db,
      config.schema,
      batchSize,
    )
    return { ...base, outcome: 'dry-run', pending, durationMs: Date.now() - started }
  } catch (error) {
    return {
      ...base,
      outcome: 'failed',
      error: errorMessage(error),
      cause: error,
      durationMs: Date.now() - started,
    }
  }
}

export interface RunViewOptions extends UpdateOptions {
  batchSize: number
  budget: Budget
  logger: Logger
}

async function runView(
  database: Database,
  config: ResolvedConfig,
  view: ViewDefinition,
  options: RunViewOptions,
): Promise<ViewResult> {
  const runner = runnerFor(view.kind)
  return withViewRun<ViewResult>(database, config, view, options, {
    lock: (conn) => acquireViewLock(database, conn, config, view, options),
    heldElsewhere: () => ({ outcome: 'skipped', reason: 'running elsewhere' }),
    beforeStart: async (conn) => {
      if (view.kind === 'handwritten') await registerView(conn, config.schema, view)
    },
    work: (run) =>
      runner.run(view as never, {
        database,
        conn: run.conn,
        lockMode: run.mode,
        runId: run.runId,
        schema: config.schema,
        batchSize: options.batchSize,
        maxBatches: options.maxBatches,
        signal: options.budget.signal,
        logger: options.logger,
        counts: run.counts,
        notes: run.notes,
        createOnly: options.createOnly ?? false,
        strategy: viewStrategy(view, options.strategy ?? config.strategy),
        rebuildShare: config.rebuildShare,
        configViews: config.views,
        ...(options.onBatch ? { onBatch: (ms: number) => options.onBatch!(view.name, ms) } : {}),
        isolateFailures: options.isolateFailures ?? false,
        tracksProgress: options.onProgress !== undefined,
        progress: run.progress,
        shouldStop: run.shouldStop,
      }),
    afterFinish: async (run, outcome) =>
      outcome === 'partial'
        ? {
            pending: await runner
              .pending(view as never, run.conn, config.schema, options.batchSize)
              .catch(() => undefined),
          }
        : {},
  })
}

/**
 * Debug lines only: the result (the CLI's summary line, the worker's own log line) says how a
 * view ended, once; a failure's stack, with its cause's (a hook's own frames), is for `-v`.
 */
function logResult(logger: Logger, r: ViewResult): void {
  const rows = formatRows(r)
  if (r.outcome === 'failed') logger.debug(`view "${r.view}" failed: ${failureTrace(r)}`)
  else logger.debug(`view "${r.view}": ${r.outcome}${r.reason ? ` (${r.reason})` : ''}, ${rows}`)
}

/** The error's message and stack, and its causes' stacks: where a hook threw. */
export function failureTrace(r: ViewResult): string {
  const lines: string[] = []
  let cause: unknown = r.cause
  for (let depth = 0; cause instanceof Error && depth < 3; depth++) {
    if (cause.stack) lines.push(depth === 0 ? cause.stack : `caused by: ${cause.stack}`)
    cause = cause.cause
  }
  return lines.length > 0 ? lines.join('\n') : (r.error ?? 'failed')
}
