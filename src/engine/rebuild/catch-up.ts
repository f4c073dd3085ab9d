import type { Kysely } from 'kysely'
import type { StopReason } from '../../runner/kind-runner.js'
import { applyKeys, type BatchCounts, claimKeys, resolveStaged } from '../apply-batch.js'
import type { ViewRuntime } from '../view-runtime.js'

/** Staged rows mapped per statement, as in the declarative runner. */
const STAGE_CHUNK = 10_000

/**
 * Applies the rebuild's change log to the shadow, once through it in key order: every staged
 * row mapped first, then batches of keys. Returns when a claim comes back short, that is at the
 * end of the log; what arrived behind the cursor meanwhile waits for the next pass (the swap's,
 * or after the swap the view's first update: the log becomes the view's log).
 */
export async function catchUp(
  db: Kysely<any>,
  shadow: ViewRuntime,
  options: {
    batchSize: number
    /**
     * False for a view kept by rebuilds: its keys cannot be recomputed one by one, so what the
     * new log holds stays there, and the view's next run rebuilds it again.
     */
    byKey: boolean
    shouldStop?: () => StopReason | undefined
    onBatch?: (counts: BatchCounts) => void
  },
): Promise<StopReason | undefined> {
  if (!options.byKey) return undefined
  let after: string[] | undefined
  while (true) {
    const stop = options.shouldStop?.()
    if (stop) return stop
    for (const source of shadow.staged) {
      while ((await resolveStaged(db, shadow, source, STAGE_CHUNK)) === STAGE_CHUNK) {}
    }
    const keys = await claimKeys(db, shadow, options.batchSize, after)
    if (keys.length > 0) options.onBatch?.(await applyKeys(db, shadow, keys))
    if (keys.length < options.batchSize) return undefined
    after = keys.at(-1)
  }
}
