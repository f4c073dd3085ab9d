import { type Kysely, sql } from 'kysely'
import type { PendingWork } from '../runner/kind-runner.js'
import { inboxRows } from './apply-batch.js'
import { keyColumns } from './key-sql.js'
import { tableRef } from './names.js'
import type { ViewRuntime } from './view-runtime.js'

/**
 * The work waiting for a created view: distinct pending keys, staged rows not yet mapped, the
 * age of the oldest change, and the rows in the target. Reads whole logs: for `status`, not
 * for the batch loop.
 */
export async function pendingWork(db: Kysely<any>, view: ViewRuntime): Promise<PendingWork> {
  // Keys captured but not yet moved into the log are pending all the same.
  const logged = sql`(SELECT ${keyColumns(view.key)}, matview_logged_at FROM ${tableRef(view.objects.log)}
    UNION ALL SELECT * FROM ${inboxRows(view)} AS i)`
  const { rows } = await sql<{ keys: string; oldest: number | null; target_rows: string }>`
    SELECT (SELECT count(*) FROM (SELECT DISTINCT ${keyColumns(view.key)} FROM ${logged} AS l) AS k) AS keys,
           extract(epoch FROM now() - (SELECT min(matview_logged_at) FROM ${logged} AS l))::float8 AS oldest,
           (SELECT count(*) FROM ${tableRef(view.target)}) AS target_rows`.execute(db)
  const detail: Record<string, number> = { keys: Number(rows[0]!.keys) }
  let lag = rows[0]!.oldest === null ? null : Number(rows[0]!.oldest)
  let staged = 0
  for (const source of view.staged) {
    const { rows: stagedRows } = await sql<{ n: string; oldest: number | null }>`
      SELECT count(*) AS n, extract(epoch FROM now() - min(matview_logged_at))::float8 AS oldest
      FROM ${tableRef(source.stage)}`.execute(db)
    staged += Number(stagedRows[0]!.n)
    const oldest = stagedRows[0]!.oldest
    if (oldest !== null) lag = Math.max(lag ?? 0, Number(oldest))
  }
  if (view.staged.length > 0) detail.staged = staged
  const checkpoint = view.backfillCheckpoint
  if (view.state === 'building') {
    detail.backfill =
      checkpoint?.method === 'ranges' ? checkpoint.bounds.length + 1 - checkpoint.done : 1
  }
  return {
    total: detail.keys! + staged,
    detail,
    lagSeconds: lag === null ? null : Math.max(0, lag),
    targetRows: Number(rows[0]!.target_rows),
  }
}
