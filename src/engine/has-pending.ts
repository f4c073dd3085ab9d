import { type Kysely, sql } from 'kysely'
import type { DeclarativeView } from '../views/declarative.js'
import { tableRef } from './names.js'
import { planRun } from './run-plan.js'
import { loadViewRuntime } from './view-runtime.js'
import { definitionHash } from './view-sql.js'

/**
 * Whether a run of the view has anything to do: one probe per log, inbox and stage, not a count (the
 * worker asks at every poll). What a run would do is run-plan.ts's answer, the one `update`
 * acts on: a view not yet created, still backfilling, or with a rebuild to finish (one a stopped
 * run left half-way) has work whatever its logs hold; a refused one (a changed definition, a
 * rebuild owed) has none, as `update` would only fail on it (`status` shows why).
 */
export async function hasPending(
  db: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
): Promise<boolean> {
  const runtime = await loadViewRuntime(db, catalog, view)
  const plan = planRun(
    {
      view: view.name,
      state: runtime?.state,
      sameDefinition: runtime?.definitionHash === definitionHash(db, view),
    },
    { rebuildOnly: view.strategy === 'rebuild' },
  )
  if (plan.work !== 'if-pending' || !runtime) return plan.work === 'always'
  const logs = [
    runtime.objects.log,
    ...(runtime.hasInbox ? [runtime.objects.inbox] : []),
    ...runtime.staged.map((s) => s.stage),
  ]
  const probes = sql.join(
    logs.map((log) => sql`EXISTS (SELECT 1 FROM ${tableRef(log)})`),
    sql` OR `,
  )
  const { rows } = await sql<{ pending: boolean }>`SELECT ${probes} AS pending`.execute(db)
  return rows[0]?.pending === true
}
