import type { RunRecord } from '../../catalog/runs.js'
import { formatDuration } from '../../config/duration.js'
import { formatCount, formatRows } from '../../runner/format-counts.js'
import type { PendingWork } from '../../runner/kind-runner.js'
import type { UpdateSummary, ViewResult } from '../../runner/update.js'

export { formatCount, formatRows }

export function formatPending(p: PendingWork | null | undefined): string {
  if (!p) return '?'
  if (p.detail.notCreated) return 'not created'
  const parts = Object.entries(p.detail)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${formatCount(n)}`)
  return parts.length === 0 ? '0' : `${formatCount(p.total)} (${parts.join(', ')})`
}

/** `customer_totals: done, +10 ~2 -1 in 3 batches, 120ms` */
export function formatResult(r: ViewResult): string {
  const why = [...(r.notes ?? []), ...reasonBeside(r.outcome, r.reason)]
  const head = `${r.view}: ${r.outcome}${why.length > 0 ? ` (${why.join(', ')})` : ''}`
  if (r.outcome === 'skipped') return head
  if (r.outcome === 'dry-run') {
    const more = r.notes && r.notes.length > 0 ? `, ${r.notes.join(', ')}` : ''
    if (r.pending?.detail.notCreated) return `${r.view}: would create and backfill it`
    return `${r.view}: would apply ${formatPending(r.pending)}${more}`
  }
  const tail = r.outcome === 'failed' ? `: ${r.error}` : ''
  const left = r.outcome === 'partial' && r.pending ? `, ${formatPending(r.pending)} left` : ''
  return `${head}, ${formatRows(r)}, ${formatDuration(r.durationMs)}${left}${tail}`
}

/** `3 views in 1.2s: 2 done, 1 skipped` */
export function formatSummary(summary: UpdateSummary): string {
  const byOutcome = new Map<string, number>()
  for (const r of summary.views) byOutcome.set(r.outcome, (byOutcome.get(r.outcome) ?? 0) + 1)
  const parts = [...byOutcome].map(([outcome, n]) => `${n} ${outcome}`)
  const n = summary.views.length
  return `${n} view${n === 1 ? '' : 's'} in ${formatDuration(summary.durationMs)}${parts.length ? `: ${parts.join(', ')}` : ''}`
}

export function formatAgo(date: Date, now = new Date()): string {
  return `${formatDuration(Math.max(0, now.getTime() - date.getTime()))} ago`
}

/**
 * A finished run that applied nothing. The worker keeps one such row per idle stretch: it
 * started at the first check that found nothing and finished at the last.
 */
export function isIdleRun(run: RunRecord): boolean {
  return run.outcome === 'done' && run.batches === 0 && run.finishedAt !== null
}

export function formatRun(run: RunRecord | null): string {
  if (!run) return 'never'
  if (isIdleRun(run)) return `${formatAgo(run.finishedAt!)}, done, nothing to do`
  const took = run.finishedAt
    ? formatDuration(run.finishedAt.getTime() - run.startedAt.getTime())
    : 'running'
  return `${formatAgo(run.startedAt)}, ${took}, ${run.outcome}, ${formatRows(run)}`
}

/**
 * The reason to print beside an outcome, without repeating it: `interrupted`, not
 * `interrupted (interrupted)`; `interrupted (not started)`.
 */
export function reasonBeside(outcome: string, reason: string | undefined): string[] {
  if (!reason || reason === outcome) return []
  return [reason.startsWith(`${outcome}, `) ? reason.slice(outcome.length + 2) : reason]
}
