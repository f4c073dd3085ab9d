import type { Kysely } from 'kysely'
import type { RunCounts } from '../catalog/runs.js'
import type { Database } from '../dialects/connect.js'
import type { Strategy } from '../engine/choose-strategy.js'
import type { ViewDefinition } from '../views/view-definition.js'
import type { Logger } from './logger.js'

/** Why a view's run stopped before its work was done. */
export type StopReason = 'time budget' | 'batch limit' | 'interrupted'

/** What one view's run has to work with; `counts` is updated as batches commit. */
export interface RunContext {
  readonly database: Database
  /** The connection held for this view's run (it also holds the view's lock). */
  readonly conn: Kysely<any>
  /**
   * How the run holds the view's lock: `shared` only for the appliers of a ready partitioned
   * view, which then apply its partitions each under a lock of its own (src/runner/view-lock.ts).
   */
  readonly lockMode: 'exclusive' | 'shared'
  /** The run's row in the run history. */
  readonly runId: number
  readonly schema: string
  readonly batchSize: number
  /** The most batches this view may run, or undefined for no limit. */
  readonly maxBatches: number | undefined
  /** Aborted when the time budget is spent or the process is asked to stop. */
  readonly signal: AbortSignal
  readonly logger: Logger
  readonly counts: RunCounts
  /** Things worth a word in the view's result line ("created", "backfilled"). */
  readonly notes: string[]
  /** Create and backfill what is missing, apply nothing (`matview create`). */
  readonly createOnly: boolean
  /** How declarative views apply their pending keys: batch by batch, by a rebuild, or either. */
  readonly strategy: Strategy
  /** `auto` rebuilds when at least this share of a view's rows is pending. */
  readonly rebuildShare: number
  /** Every view of the config (a rebuild re-attaches the views that read the rebuilt one). */
  readonly configViews: readonly ViewDefinition[]
  /**
   * The view failed repeatedly (the worker): apply a failing batch in halves and set aside the
   * keys that fail alone, so the rest proceeds (declarative views; src/engine/set-aside.ts).
   */
  readonly isolateFailures: boolean
  /** Someone listens to `progress` (a progress bar): worth a query to learn the total. */
  readonly tracksProgress: boolean
  /** Called after each batch that committed, with how long it took (metrics). */
  onBatch?(ms: number): void
  /** Reports progress: `done` of `total` units (rows or keys). */
  progress(done: number, total: number): void
  /** Why the run must stop now, or undefined to go on (checked before each batch). */
  shouldStop(): StopReason | undefined
}

/** How much work a view has now, for `--dry-run` and `status`. */
export interface PendingWork {
  /** Total units (rows or keys) waiting. */
  total: number
  /** The parts, e.g. `{ insert: 3, update: 0, delete: 1 }` or `{ keys: 120 }`. */
  detail: Record<string, number>
  /** Age in seconds of the oldest unapplied change, where known. */
  lagSeconds?: number | null
  /** Rows in the target table, where the view has one matview knows of. */
  targetRows?: number
}

/** The part of the runner that differs between hand-written and declarative views. */
export interface KindRunner<V extends ViewDefinition = ViewDefinition> {
  /** Checks and creates what the views need before any of them runs (declarative: tables, triggers). */
  prepare?(database: Database, schema: string, views: V[], logger: Logger): Promise<void>
  /** Applies the view's pending work; returns why it stopped early, or undefined when all is done. */
  run(view: V, ctx: RunContext): Promise<StopReason | undefined>
  /** The work waiting now, without writing. */
  pending(view: V, db: Kysely<any>, schema: string, batchSize: number): Promise<PendingWork>
}
