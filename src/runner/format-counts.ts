import type { RunCounts } from '../catalog/runs.js'
import { formatDuration } from '../config/duration.js'

/** Every count matview prints, one way: `12,345`. */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US')
}

/** `+10 ~2 -1 in 3 batches` */
export function formatRows(r: RunCounts): string {
  return `+${formatCount(r.inserted)} ~${formatCount(r.updated)} -${formatCount(r.deleted)} in ${formatCount(r.batches)} batch${r.batches === 1 ? '' : 'es'}`
}

/** A duration as every line prints it (`340ms`, `1.2s`, `3m 5s`). */
export { formatDuration }
