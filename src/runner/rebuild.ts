import { readViewRows } from '../catalog/view-rows.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import {
  REBUILD_LOCK_TIMEOUT_MS,
  REBUILD_SWAP_ATTEMPTS,
  rebuildView,
} from '../engine/rebuild/rebuild-view.js'
import { planRun } from '../engine/run-plan.js'
import { definitionHash } from '../engine/view-sql.js'
import { UsageError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { Budget } from './budget.js'
import { type Logger, silentLogger } from './logger.js'
import { failureTrace, type ProgressEvent, selectViews, type ViewResult } from './update.js'
import { withViewRun } from './view-run.js'

export interface RebuildOptions {
  /** Also every declarative view whose definition changed or that needs or is in a rebuild. */
  allChanged?: boolean
  /** Keys per catch-up batch, rows per backfill page (default: the config's `batchSize`). */
  batchSize?: number
  /** Time budget in milliseconds: a rebuild stopped by it resumes on the next `rebuild`. */
  maxTime?: number
  /** The most backfill ranges and catch-up batches per view. */
  maxBatches?: number
  /** How long the swap may wait for a lock before it tries again (default 3000 ms). */
  lockTimeout?: number
  /** Aborting it stops after the current batch (SIGINT/SIGTERM in the CLI). */
  signal?: AbortSignal
  logger?: Logger
  onProgress?: (event: ProgressEvent) => void
}

/** One view's rebuild; `rows` is the new table's row count when it was swapped in. */
export interface RebuildResult extends ViewResult {
  rows?: number
}

export interface RebuildSummary {
  views: RebuildResult[]
  durationMs: number
}

/**
 * Rebuilds the named views (and with `allChanged` the changed ones), one after the other in
 * dependency order, each under its lock. Naming a view that cannot be rebuilt (unknown,
 * hand-written, never created) throws before anything runs; a view that fails is reported in
 * its result and the others still run.
 */
export async function runRebuild(
  database: Database,
  config: ResolvedConfig,
  names: string[],
  options: RebuildOptions = {},
): Promise<RebuildSummary> {
  const started = Date.now()
  const views = await chooseViews(database, config, names, options.allChanged === true)
  const budget = new Budget(options.maxTime, options.signal)
  const results: RebuildResult[] = []
  try {
    for (const view of views) {
      options.onProgress?.({ type: 'start', view: view.name })
      const result = await rebuildOne(database, config, view, options, budget)
      results.push(result)
      // The result line says it once; the stack is for -v.
      if (result.outcome === 'failed')
        (options.logger ?? silentLogger).debug(
          `view "${view.name}" failed: ${failureTrace(result)}`,
        )
      options.onProgress?.({ type: 'end', view: view.name, result })
    }
  } finally {
    budget.dispose()
  }
  return { views: results, durationMs: Date.now() - started }
}

async function chooseViews(
  database: Database,
  config: ResolvedConfig,
  names: string[],
  allChanged: boolean,
): Promise<DeclarativeView[]> {
  if (names.length === 0 && !allChanged) {
    throw new UsageError('name the views to rebuild, or use --all-changed')
  }
  // Unknown names are refused here, listing the known views.
  const named = names.length > 0 ? selectViews(config.views, names) : []
  const rows = await readViewRows(database.db, config.schema)
  const wanted = new Set(names)
  for (const view of named) {
    if (view.kind !== 'declarative') {
      throw new UsageError(
        `view "${view.name}" is hand-written; rebuild applies to declarative views (defineView)`,
      )
    }
    if (rows.get(view.name)?.kind !== 'declarative') {
      throw new UsageError(
        `view "${view.name}" has not been created yet; run "matview update" to create it`,
      )
    }
  }
  if (allChanged) {
    for (const view of config.views) {
      const row = rows.get(view.name)
      if (view.kind !== 'declarative' || row?.kind !== 'declarative') continue
      const plan = planRun(
        {
          view: view.name,
          state: row.state,
          sameDefinition: row.definitionHash === definitionHash(database.db, view),
        },
        { rebuildOnly: view.strategy === 'rebuild' },
      )
      if (plan.rebuildOwed) wanted.add(view.name)
    }
  }
  // Dependency order: a view is rebuilt after the views it reads.
  return selectViews(config.views, undefined).filter(
    (v): v is DeclarativeView => v.kind === 'declarative' && wanted.has(v.name),
  )
}

async function rebuildOne(
  database: Database,
  config: ResolvedConfig,
  view: DeclarativeView,
  options: RebuildOptions,
  budget: Budget,
): Promise<RebuildResult> {
  let rows: number | undefined
  return withViewRun<RebuildResult>(
    database,
    config,
    view,
    { budget, maxBatches: options.maxBatches, onProgress: options.onProgress },
    {
      lock: async (conn, key) =>
        (await database.adapter.tryLock(conn, key)) ? 'exclusive' : undefined,
      heldElsewhere: () => {
        const error = new UsageError(
          `view "${view.name}" is being updated or rebuilt by another runner; try again when it is done`,
        )
        return { outcome: 'failed', error: error.message, cause: error }
      },
      work: async (run) => {
        const done = await rebuildView(view, {
          conn: run.conn,
          catalog: config.schema,
          configViews: config.views,
          batchSize: options.batchSize ?? config.batchSize,
          lockTimeoutMs: options.lockTimeout ?? REBUILD_LOCK_TIMEOUT_MS,
          swapAttempts: REBUILD_SWAP_ATTEMPTS,
          logger: options.logger ?? silentLogger,
          counts: run.counts,
          notes: run.notes,
          progress: run.progress,
          shouldStop: run.shouldStop,
        })
        rows = done.rows
        return done.stop
      },
      afterFinish: async (run, _outcome, reason) => {
        if (reason) run.notes.push(`the rebuild resumes on the next "matview rebuild ${view.name}"`)
        return rows !== undefined ? { rows } : {}
      },
    },
  )
}
