import { lastRuns, type RunRecord } from '../catalog/runs.js'
import { readViewRows, type ViewState } from '../catalog/view-rows.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import { PRINTED_STATE_REASON } from '../engine/create-view.js'
import { planRun } from '../engine/run-plan.js'
import { checkSources } from '../engine/schema-check.js'
import { countSetAside } from '../engine/set-aside.js'
import { definitionHash } from '../engine/view-sql.js'
import { errorMessage } from '../errors/matview-error.js'
import type { ViewDefinition } from '../views/view-definition.js'
import { maxLagSeconds } from '../worker/view-timing.js'
import { formatCount } from './format-counts.js'
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
  /** The view's freshness target (`maxLag`), in seconds, if it has one. */
  maxLagSeconds?: number
  /** Its oldest pending change is older than `maxLag`. */
  overMaxLag: boolean
  /** Keys set aside after failing alone (`matview retry NAME` puts them back). */
  setAside: number
}

/** Why a view fails `status --check`: over its `maxLag`, or its last run failed. */
export function checkProblem(status: ViewStatus): string | undefined {
  if (status.lastRun?.outcome === 'failed') return 'last run failed'
  if (status.overMaxLag) return `lag over maxLag ${status.maxLagSeconds}s`
  if (status.setAside > 0)
    return `${formatCount(status.setAside)} key${status.setAside === 1 ? '' : 's'} set aside`
  return undefined
}

/** The state of every configured view (or the named ones). */
export async function readStatus(
  database: Database,
  config: ResolvedConfig,
  options: { views?: string[] } = {},
): Promise<ViewStatus[]> {
  const views = selectViews(config.views, options.views)
  const names = views.map((v) => v.name)
  const [runs, rows, setAside] = await Promise.all([
    lastRuns(database.db, config.schema, names),
    readViewRows(database.db, config.schema),
    countSetAside(database.db, config.schema),
  ])
  const statuses: ViewStatus[] = []
  for (const view of views) {
    const row = rows.get(view.name)
    const changed =
      view.kind === 'declarative' &&
      row?.kind === 'declarative' &&
      row.state === 'ready' &&
      planRun(
        {
          view: view.name,
          state: row.state,
          sameDefinition: row.definitionHash === definitionHash(database.db, view),
        },
        { rebuildOnly: view.strategy === 'rebuild' },
      ).refusal?.code === 'DEFINITION_CHANGED'
    // What the next run's schema check would mark (without event triggers, nothing marked
    // it yet): a source replaced or altered, a partition attached.
    const broken =
      view.kind === 'declarative' &&
      row?.kind === 'declarative' &&
      row.state !== 'needs_rebuild' &&
      // Objects from "matview sql" are checked as printed by the first run, before this.
      row.stateReason !== PRINTED_STATE_REASON
        ? await checkSources(database.db, config.schema, view.name, false).catch(() => [])
        : []
    const status: ViewStatus = {
      name: view.name,
      kind: view.kind,
      state:
        changed || (broken.length > 0 && row?.state !== 'rebuilding')
          ? 'needs_rebuild'
          : (row?.state ?? 'new'),
      stateReason: changed
        ? 'its definition changed since it was created'
        : broken.length > 0 && row?.state !== 'rebuilding'
          ? broken.join('; ')
          : (row?.stateReason ?? null),
      lastRun: runs.get(view.name) ?? null,
      pending: null,
      running: await database.adapter.isLocked(database.db, {
        schema: config.schema,
        name: view.name,
      }),
      overMaxLag: false,
      setAside: setAside.get(view.name) ?? 0,
    }
    const maxLag = maxLagSeconds(view)
    if (maxLag !== undefined) status.maxLagSeconds = maxLag
    try {
      status.pending = await runnerFor(view.kind).pending(
        view,
        database.db,
        config.schema,
        config.batchSize,
      )
      const lag = status.pending.lagSeconds
      status.overMaxLag = maxLag !== undefined && lag != null && lag > maxLag
    } catch (error) {
      status.pendingError = errorMessage(error)
    }
    statuses.push(status)
  }
  return statuses
}
