import type { Kysely } from 'kysely'
import {
  finishRun,
  mergeIdleRun,
  type RunCounts,
  type RunOutcome,
  startRun,
} from '../catalog/runs.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import type { LockKey } from '../dialects/dialect-adapter.js'
import { errorMessage } from '../errors/matview-error.js'
import type { ViewDefinition } from '../views/view-definition.js'
import type { Budget } from './budget.js'
import type { StopReason } from './kind-runner.js'
import type { ProgressEvent, ViewResult } from './update.js'
import type { LockMode } from './view-lock.js'

export interface ViewRunOptions {
  /** The time budget and the abort signal of the whole command. */
  budget: Budget
  /** The most batches the view may run. */
  maxBatches?: number
  onProgress?: (event: ProgressEvent) => void
  /** Fold a run that found nothing to do into the previous idle run's row (the worker). */
  mergeIdleRuns?: boolean
}

/** What the work of one view's run has: its connection, lock, run row, and what it reports. */
export interface ViewRun {
  /** The connection held for the run; it also holds the view's lock. */
  readonly conn: Kysely<any>
  readonly mode: LockMode
  /** The run's row in the run history. */
  readonly runId: number
  /** Updated by the work as batches commit; recorded in the run row and the result. */
  readonly counts: RunCounts
  /** Things worth a word in the view's result line. */
  readonly notes: string[]
  /** Reports progress: `done` of `total` units (rows or keys). */
  progress(done: number, total: number): void
  /** Why the run must stop now (time budget, batch limit, interruption), or undefined. */
  shouldStop(): StopReason | undefined
}

/** The parts of a view's run that differ between `update` and `rebuild`. */
export interface ViewRunSteps<R extends ViewResult> {
  /** Takes the view's lock on `conn`; undefined when another runner holds the view. */
  lock(conn: Kysely<any>, key: LockKey): Promise<LockMode | undefined>
  /** The result when another runner holds the view. */
  heldElsewhere(): Pick<R, 'outcome'> & Partial<R>
  /** Under the lock, before the run row is written. */
  beforeStart?(conn: Kysely<any>): Promise<void>
  /** The run's work; returns why it stopped early, or undefined when all is done. */
  work(run: ViewRun): Promise<StopReason | undefined>
  /** Under the lock, after the run row is finished: what the result adds. */
  afterFinish?(
    run: ViewRun,
    outcome: RunOutcome,
    reason: StopReason | undefined,
  ): Promise<Partial<R>>
}

/**
 * One view's run, as `update` and `rebuild` make it: a connection of its own, the view's lock,
 * a row in the run history from start to end, and the lock released whatever happened. A
 * failure is reported in the result, never thrown, so the other views still run.
 */
export async function withViewRun<R extends ViewResult>(
  database: Database,
  config: ResolvedConfig,
  view: ViewDefinition,
  options: ViewRunOptions,
  steps: ViewRunSteps<R>,
): Promise<R> {
  const { budget } = options
  const started = Date.now()
  const counts: RunCounts = { inserted: 0, updated: 0, deleted: 0, batches: 0 }
  const notes: string[] = []
  const result = (outcome: R['outcome'], extra: Partial<R> = {}): R =>
    ({
      view: view.name,
      kind: view.kind,
      outcome,
      ...counts,
      ...(notes.length > 0 ? { notes: [...notes] } : {}),
      durationMs: Date.now() - started,
      ...extra,
    }) as R
  const early = budget.stopReason()
  if (early)
    return result(early === 'interrupted' ? 'interrupted' : 'partial', {
      reason: `${early}, not started`,
    } as Partial<R>)

  const key = { schema: config.schema, name: view.name }
  try {
    return await database.db.connection().execute(async (held) => {
      const conn = budget.watch(held)
      const mode = await steps.lock(conn, key)
      if (!mode) {
        const { outcome, ...extra } = steps.heldElsewhere()
        return result(outcome, extra as Partial<R>)
      }
      try {
        await steps.beforeStart?.(conn)
        // Shared, other appliers' runs are running now: only an exclusive holder closes the
        // runs left running by a dead process (acquireViewLock did, before it shared the lock).
        // An exclusive holder (every rebuild) closes them with the insert, in one statement.
        const runId = await startRun(conn, config.schema, view.name, {
          closeStale: mode === 'exclusive',
        })
        const run: ViewRun = {
          conn,
          mode,
          runId,
          counts,
          notes,
          progress: (done, total) =>
            options.onProgress?.({ type: 'progress', view: view.name, done, total }),
          shouldStop: () =>
            budget.stopReason() ??
            (options.maxBatches !== undefined && counts.batches >= options.maxBatches
              ? 'batch limit'
              : undefined),
        }
        let outcome: RunOutcome = 'done'
        let reason: StopReason | undefined
        let failure: unknown
        try {
          reason = await steps.work(run)
          if (reason) outcome = reason === 'interrupted' ? 'interrupted' : 'partial'
        } catch (error) {
          failure = error
          // Work that honoured the abort signal throws; that is an interruption, not a failure.
          outcome = budget.interrupted ? 'interrupted' : 'failed'
          if (outcome === 'interrupted') reason = 'interrupted'
        }
        const idle =
          options.mergeIdleRuns === true &&
          mode === 'exclusive' &&
          outcome === 'done' &&
          counts.batches === 0 &&
          notes.length === 0
        const merged = idle && (await mergeIdleRun(conn, config.schema, runId))
        if (!merged)
          await finishRun(
            conn,
            config.schema,
            runId,
            outcome,
            counts,
            failure ? errorMessage(failure) : undefined,
            config.keepRunsMs,
          )
        const extra: Partial<ViewResult> = {}
        if (reason) extra.reason = reason
        Object.assign(extra, await steps.afterFinish?.(run, outcome, reason))
        if (failure && outcome === 'failed')
          Object.assign(extra, { error: errorMessage(failure), cause: failure })
        return result(outcome as R['outcome'], extra as Partial<R>)
      } finally {
        const release = mode === 'shared' ? database.adapter.unlockShared : database.adapter.unlock
        await release(conn, key).catch(() => {})
      }
    })
  } catch (error) {
    // The connection itself failed (database gone, catalog unwritable): this view failed.
    return result('failed', { error: errorMessage(error), cause: error } as Partial<R>)
  }
}
