import type { ViewState } from '../catalog/view-rows.js'

/**
 * What a run of a declarative view does, decided in one place from the catalog's row: the
 * runner, its lock step, the worker's poll, verify, status and `rebuild --all-changed` all ask
 * here, so they cannot disagree about whether a view may run (audit finding 10: the worker
 * skipped a view the runner would have finished).
 *
 * - `create`: never created; create it and backfill.
 * - `restart`: still backfilling, for another definition; discard it and create it again.
 * - `backfill`: finish the backfill, then apply what is pending.
 * - `finish-rebuild`: a rebuild of the same definition stopped half-way; finish it.
 * - `apply`: ready; apply the pending keys (by key, or by a rebuild when `auto` finds it cheaper).
 * - `rebuild`: kept by rebuilds only (the view's `strategy: 'rebuild'`): rebuild when anything is
 *   pending, or at once when it needs one (a TRUNCATE of a source).
 * - `refuse`: the run would fail; `refusal` says why and what to run.
 */
export type RunAction =
  | 'create'
  | 'restart'
  | 'backfill'
  | 'finish-rebuild'
  | 'apply'
  | 'rebuild'
  | 'refuse'

export interface RunFacts {
  /** The view's name, for messages. */
  view: string
  /** The catalog's state, or undefined when the view was never created. */
  state: ViewState | undefined
  /** The catalog's definition hash is the definition's. */
  sameDefinition: boolean
  /** Why the catalog says what it says (a `needs_rebuild`'s cause), for messages. */
  stateReason?: string | null
}

export interface RunPlanOptions {
  /** The view is kept by rebuilds only, never by key (its `strategy: 'rebuild'`). */
  rebuildOnly: boolean
}

export interface RunPlan {
  action: RunAction
  /**
   * Whether a run has work: `always` (create, backfill, a rebuild to finish or owed),
   * `if-pending` (only when the log, inbox or a stage holds something), `never` (refused).
   */
  work: 'always' | 'if-pending' | 'never'
  /** The target does not hold the current definition's rows: a rebuild is the way on. */
  rebuildOwed: boolean
  /** The target holds the current definition's rows and may be compared with its query. */
  comparable: boolean
  refusal?: { reason: string; code?: 'DEFINITION_CHANGED' }
}

export function planRun(facts: RunFacts, options: RunPlanOptions): RunPlan {
  const { view, state, sameDefinition } = facts
  const plan = (
    action: RunAction,
    work: RunPlan['work'],
    extra: Partial<RunPlan> = {},
  ): RunPlan => ({ action, work, rebuildOwed: false, comparable: false, ...extra })
  const rebuild = `run "matview rebuild ${view}"`
  switch (state) {
    case undefined:
      return plan('create', 'always')
    case 'building':
      // Never served: started again from the new definition rather than rebuilt.
      return sameDefinition
        ? plan('backfill', 'always')
        : plan('restart', 'always', { rebuildOwed: true })
    case 'rebuilding':
      // Whatever else is true, the rebuild owns the view until it swaps its table in.
      return sameDefinition
        ? plan('finish-rebuild', 'always', { rebuildOwed: true })
        : plan('refuse', 'never', {
            rebuildOwed: true,
            refusal: {
              reason: `a rebuild was started and has not finished; ${rebuild} to finish it (update leaves it untouched)`,
            },
          })
  }
  if (!sameDefinition)
    return plan('refuse', 'never', {
      rebuildOwed: true,
      refusal: {
        reason: `its definition changed since the view was created; ${rebuild} to rebuild it from the new definition (update leaves it untouched)`,
        code: 'DEFINITION_CHANGED',
      },
    })
  if (state === 'needs_rebuild')
    return options.rebuildOnly
      ? plan('rebuild', 'always', { rebuildOwed: true })
      : plan('refuse', 'never', {
          rebuildOwed: true,
          refusal: {
            reason: `needs a rebuild${facts.stateReason ? ` (${facts.stateReason})` : ''}; ${rebuild}`,
          },
        })
  return plan(options.rebuildOnly ? 'rebuild' : 'apply', 'if-pending', { comparable: true })
}
