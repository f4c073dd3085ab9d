import type { StopReason } from './kind-runner.js'

/**
 * The limits of one `update`: a deadline for the whole run (`--max-time`), and the caller's
 * shutdown signal (SIGINT/SIGTERM). `signal` aborts on either, so hooks can stop early.
 */
export class Budget {
  readonly signal: AbortSignal
  private readonly deadline: number | undefined
  private readonly timer: NodeJS.Timeout | undefined

  constructor(
    maxTimeMs: number | undefined,
    private readonly shutdown: AbortSignal | undefined,
  ) {
    const budget = new AbortController()
    if (maxTimeMs !== undefined) {
      this.deadline = Date.now() + maxTimeMs
      this.timer = setTimeout(() => budget.abort(new Error('time budget spent')), maxTimeMs)
      this.timer.unref()
    }
    this.signal = shutdown ? AbortSignal.any([shutdown, budget.signal]) : budget.signal
  }

  /** Why work must stop now, if it must. */
  stopReason(): StopReason | undefined {
    if (this.shutdown?.aborted) return 'interrupted'
    if (this.deadline !== undefined && Date.now() >= this.deadline) return 'time budget'
    return undefined
  }

  get interrupted(): boolean {
    return this.shutdown?.aborted === true
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer)
  }
}
