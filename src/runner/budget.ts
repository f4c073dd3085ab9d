import type { Kysely } from 'kysely'
import type { StopReason } from './kind-runner.js'
import { yieldToEventLoop } from './yield-plugin.js'

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

  /**
   * Lets the event loop turn after each query of `db` when there is a shutdown signal to
   * notice (see yield-plugin.ts). Without one nothing waits on the loop, and an application
   * driving a shared PGlite instance in a tight loop of its own must not starve the run.
   */
  watch(db: Kysely<any>): Kysely<any> {
    return this.shutdown ? db.withPlugin(yieldToEventLoop) : db
  }

  get interrupted(): boolean {
    return this.shutdown?.aborted === true
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer)
  }
}
