import ms from 'ms'

/**
 * Parses a duration such as `30s`, `5m`, `1h`, `500ms` or a number of milliseconds.
 * Returns undefined when the text is not a duration, so callers can name the field.
 */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed)
  const parsed = ms(trimmed as ms.StringValue)
  return typeof parsed === 'number' && Number.isFinite(parsed) && parsed >= 0 ? parsed : undefined
}

/** `1234` → `1.2s`, for summaries. */
export function formatDuration(milliseconds: number): string {
  if (milliseconds < 1000) return `${Math.round(milliseconds)}ms`
  if (milliseconds < 60_000) return `${(milliseconds / 1000).toFixed(1)}s`
  const minutes = Math.floor(milliseconds / 60_000)
  const seconds = Math.round((milliseconds % 60_000) / 1000)
  if (minutes < 60) return `${minutes}m${seconds ? `${seconds}s` : ''}`
  return `${Math.floor(minutes / 60)}h${minutes % 60}m`
}
