import { Cron } from 'croner'
import { parseDuration } from '../config/duration.js'
import type { ViewDefinition } from '../views/view-definition.js'

/** When the worker runs a view, resolved from its `schedule`, `every` or `onChange`. */
export type Timing =
  | { mode: 'schedule'; cron: Cron }
  | { mode: 'every'; intervalMs: number }
  | { mode: 'change'; debounceMs: number }

export const DEFAULT_DEBOUNCE_MS = 250

/** The view's timing; the config schema has checked the fields already. */
export function viewTiming(view: ViewDefinition): Timing {
  if (view.schedule !== undefined)
    return { mode: 'schedule', cron: new Cron(view.schedule, { paused: true }) }
  if (view.every !== undefined) return { mode: 'every', intervalMs: parseDuration(view.every)! }
  const debounce = typeof view.onChange === 'object' ? view.onChange.debounce : undefined
  return {
    mode: 'change',
    debounceMs: debounce === undefined ? DEFAULT_DEBOUNCE_MS : parseDuration(debounce)!,
  }
}

/** When a scheduled or periodic view is next due, from `now`. */
export function nextDue(timing: Timing, now: number): number | undefined {
  if (timing.mode === 'every') return now + timing.intervalMs
  if (timing.mode === 'schedule') return timing.cron.nextRun(new Date(now))?.getTime()
  return undefined
}

/** The view's `maxLag` in seconds, if it has one. */
export function maxLagSeconds(view: ViewDefinition): number | undefined {
  if (view.maxLag === undefined) return undefined
  const ms = parseDuration(view.maxLag)
  return ms === undefined ? undefined : ms / 1000
}

/**
 * Exponential backoff with jitter after `failures` failures in a row: 1s, 2s, 4s… up to 5
 * minutes, each between half and all of that, so workers that failed together spread out.
 */
export function backoffMs(failures: number, random = Math.random): number {
  const ceiling = Math.min(300_000, 1000 * 2 ** Math.max(0, failures - 1))
  return Math.round(ceiling / 2 + random() * (ceiling / 2))
}
