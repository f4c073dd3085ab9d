import { type Kysely, sql } from 'kysely'
import type { DeclarativeView } from '../views/declarative.js'
import { tableRef } from './names.js'
import { loadViewRuntime } from './view-runtime.js'

/**
 * Whether a run of the view has anything to do: one probe per log, inbox and stage, not a count (the
 * worker asks at every poll). A view not yet created or still backfilling has; one that needs
 * a rebuild has not, as `update` would only fail on it (`status` shows why).
 */
export async function hasPending(
  db: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
): Promise<boolean> {
  const runtime = await loadViewRuntime(db, catalog, view)
  if (!runtime || runtime.state === 'building') return true
  if (runtime.state !== 'ready') return false
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
