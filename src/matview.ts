import { ensureCatalog } from './catalog/ensure-catalog.js'
import { listRuns, type RunRecord } from './catalog/runs.js'
import { readViewRows } from './catalog/view-rows.js'
import { listWorkers, type WorkerRecord } from './catalog/workers.js'
import type { MatviewConfig } from './config/define-config.js'
import {
  type ConfigOverrides,
  type ResolvedConfig,
  resolveConfig,
} from './config/resolve-config.js'
import { connect, type Database } from './dialects/connect.js'
import { type DropResult, dropView } from './engine/drop-view.js'
import { retrySetAside } from './engine/set-aside.js'
import { loadViewRuntime } from './engine/view-runtime.js'
import { UsageError } from './errors/matview-error.js'
import { printViewSql } from './runner/print-sql.js'
import { type RebuildOptions, type RebuildSummary, runRebuild } from './runner/rebuild.js'
import { readStatus, type ViewStatus } from './runner/status.js'
import { runUpdate, selectViews, type UpdateOptions, type UpdateSummary } from './runner/update.js'
import { runVerify, type VerifyOptions, type VerifySummary } from './runner/verify.js'
import {
  runWorker,
  type WorkerOptions,
  type WorkerState,
  type WorkerSummary,
} from './worker/worker.js'

/** A worker silent for this long (three missed heartbeats and then some) is shown as dead. */
export const DEFAULT_STALE_SECONDS = 20

/**
 * An open matview: the config, the database connection and a ready catalog. Reuse one for
 * many `update()` calls (a worker, a test): connecting and checking the catalog happen once.
 *
 * @example
 * const mv = await createMatview({ database: 'postgres://localhost/app', views: [customerTotals] })
 * const summary = await mv.update({ maxTime: 30_000 })
 * await mv.close()
 */
export class Matview {
  private constructor(
    readonly config: ResolvedConfig,
    readonly database: Database,
  ) {}

  /** Opens the database and creates or upgrades the catalog. */
  static async open(
    config: MatviewConfig | ResolvedConfig = {},
    overrides: ConfigOverrides = {},
  ): Promise<Matview> {
    const resolved = isResolved(config) ? config : resolveConfig(config, overrides)
    const database = await connect(resolved.database)
    try {
      await ensureCatalog(database.db, resolved.schema)
    } catch (error) {
      await database.close()
      throw error
    }
    return new Matview(resolved, database)
  }

  /** Applies what changed, view by view; see {@link UpdateOptions}. */
  update(options: UpdateOptions = {}): Promise<UpdateSummary> {
    return runUpdate(this.database, this.config, options)
  }

  /**
   * Rebuilds declarative views from their definitions (see `matview rebuild`): a shadow table
   * filled in batches, then swapped in by one short transaction. Needed after a definition
   * changed or a source was truncated; resumes an interrupted rebuild.
   */
  rebuild(names: string[], options: RebuildOptions = {}): Promise<RebuildSummary> {
    return runRebuild(this.database, this.config, names, options)
  }

  /**
   * Compares declarative views with their queries (all of them when `names` is empty), in key
   * ranges of one short read-only statement each, and reports missing, extra and different
   * keys; with `repair` it applies the drifted keys (see `matview verify`).
   *
   * @example
   * const { views } = await mv.verify(['customer_totals'])
   * if (views[0]!.outcome === 'drift') console.log(views[0]!.different)
   */
  verify(names: string[] = [], options: VerifyOptions = {}): Promise<VerifySummary> {
    return runVerify(this.database, this.config, names, options)
  }

  /**
   * Keeps the views fresh until `options.signal` aborts (see `matview worker`): change-driven
   * views shortly after a write, the others on their `schedule` or `every`.
   */
  worker(
    options: WorkerOptions = {},
    onState?: (state: WorkerState) => void,
  ): Promise<WorkerSummary> {
    return runWorker(this.database, this.config, options, onState)
  }

  /** The workers registered in the catalog; `dead` when silent for over `staleSeconds`. */
  workers(staleSeconds = DEFAULT_STALE_SECONDS): Promise<WorkerRecord[]> {
    return listWorkers(this.database.db, this.config.schema, staleSeconds)
  }

  /**
   * Puts the keys set aside for each view (after failing alone in the worker) back in its change
   * log, for the next run to apply; returns how many per view.
   */
  async retry(names: string[]): Promise<{ view: string; keys: number }[]> {
    const views = selectViews(this.config.views, names)
    const handwritten = views.find((v) => v.kind === 'handwritten')
    if (handwritten)
      throw new UsageError(
        `view "${handwritten.name}" is hand-written: only declarative views have keys to set aside`,
      )
    const results: { view: string; keys: number }[] = []
    for (const view of views) {
      const runtime = await loadViewRuntime(this.database.db, this.config.schema, view as never)
      const keys = runtime ? await retrySetAside(this.database.db, this.config.schema, runtime) : 0
      results.push({ view: view.name, keys })
    }
    return results
  }

  /** Every view's state, pending work, last run and lock. */
  status(options: { views?: string[] } = {}): Promise<ViewStatus[]> {
    return readStatus(this.database, this.config, options)
  }

  /**
   * A view's runs, newest first. A name neither in the config nor in the catalog, with no runs
   * (a dropped view keeps its history), is a {@link UsageError}: most likely a typo.
   */
  async history(view: string, limit = 20): Promise<RunRecord[]> {
    const runs = await listRuns(this.database.db, this.config.schema, view, limit)
    if (runs.length > 0 || this.config.views.some((v) => v.name === view)) return runs
    const created = await readViewRows(this.database.db, this.config.schema)
    if ([...created.values()].some((row) => row.name === view)) return runs
    const known = [
      ...new Set([
        ...this.config.views.map((v) => v.name),
        ...[...created.values()].map((r) => r.name),
      ]),
    ]
    throw new UsageError(
      `unknown view "${view}"; known views: ${known.length > 0 ? known.join(', ') : 'none'}`,
      'UNKNOWN_VIEW',
    )
  }

  /** Drops views from the database (see `matview drop`), one after the other. */
  async drop(names: string[], options: { keepTable?: boolean } = {}): Promise<DropResult[]> {
    const results: DropResult[] = []
    for (const name of names)
      results.push(await dropView(this.database, this.config, name, options))
    return results
  }

  /** Closes the connection matview opened (never an application's own Kysely instance). */
  close(): Promise<void> {
    return this.database.close()
  }
}

function isResolved(config: MatviewConfig | ResolvedConfig): config is ResolvedConfig {
  return 'databaseFrom' in config
}

/** Opens a {@link Matview}. */
export function createMatview(
  config?: MatviewConfig | ResolvedConfig,
  overrides?: ConfigOverrides,
): Promise<Matview> {
  return Matview.open(config, overrides)
}

/** Opens, updates and closes: the one-call form of `matview update`. */
export async function update(
  config: MatviewConfig | ResolvedConfig,
  options: UpdateOptions = {},
): Promise<UpdateSummary> {
  const mv = await Matview.open(config)
  try {
    return await mv.update(options)
  } finally {
    await mv.close()
  }
}

/**
 * The DDL `create` would run for the declarative views not created yet (all of them when
 * `names` is empty), as a commented SQL script for a migration tool (see `matview sql`).
 * Changes nothing: it does not even create the catalog, whose migrations it prints instead.
 */
export async function viewSql(
  config: MatviewConfig | ResolvedConfig,
  names: string[] = [],
): Promise<string> {
  const resolved = isResolved(config) ? config : resolveConfig(config)
  const database = await connect(resolved.database)
  try {
    return await printViewSql(database, resolved, names)
  } finally {
    await database.close()
  }
}

/** Opens, reads the status and closes: the one-call form of `matview status`. */
export async function status(
  config: MatviewConfig | ResolvedConfig,
  options: { views?: string[] } = {},
): Promise<ViewStatus[]> {
  const mv = await Matview.open(config)
  try {
    return await mv.status(options)
  } finally {
    await mv.close()
  }
}
