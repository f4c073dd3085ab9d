import { lastRuns, type RunRecord } from '../catalog/runs.js'
import { readViewRows, type ViewState } from '../catalog/view-rows.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import { definitionHash } from '../engine/view-sql.js'
import { errorMessage } from '../errors/matview-error.js'
import type { ViewDefinition } from '../views/view-definition.js'
import type { PendingWork } from './kind-runner.js'
import { runnerFor } from './runners.js'
import { selectViews } from './update.js'

/** One view as `status` shows it. */
export interface ViewStatus {
  name: string
  kind: ViewDefinition['kind']
  /**
   * The catalog's state for the view, or `new` when it never ran. A ready declarative view
   * whose definition changed since it was created is `needs_rebuild` (update refuses it).
   */
  state: ViewState | 'new'
  stateReason: string | null
  lastRun: RunRecord | null
  /** Work waiting now, or null when it could not be measured (see `pendingError`). */
  pending: PendingWork | null
  pendingError?: string
  /** A runner holds the view's lock right now. */
  running: boolean
}

/** The state of every configured view (or the named ones). */
export async function readStatus(
  database: Database,
  config: ResolvedConfig,
  options: { views?: string[] } = {},
): Promise<ViewStatus[]> {
  const views = selectViews(config.views, options.views)
  const names = views.map((v) => v.name)
  const [runs, rows] = await Promise.all([
    lastRuns(database.db, config.schema, names),
    readViewRows(database.db, config.schema),
  ])
  const statuses: ViewStatus[] = []
  for (const view of views) {
    const row = rows.get(view.name)
    const changed =
      view.kind === 'declarative' &&
      row?.kind === 'declarative' &&
      row.state === 'ready' &&
      row.definitionHash !== definitionHash(database.db, view)
    const status: ViewStatus = {
      name: view.name,
      kind: view.kind,
      state: changed ? 'needs_rebuild' : (row?.state ?? 'new'),
      stateReason: changed
        ? 'its definition changed since it was created'
        : (row?.stateReason ?? null),
      lastRun: runs.get(view.name) ?? null,
      pending: null,
      running: await database.adapter.isLocked(database.db, {
        schema: config.schema,
        name: view.name,
      }),
    }
    try {
      status.pending = await runnerFor(view.kind).pending(
        view,
        database.db,
        config.schema,
        config.batchSize,
      )
    } catch (error) {
      status.pendingError = errorMessage(error)
    }
    statuses.push(status)
  }
  return statuses
}
