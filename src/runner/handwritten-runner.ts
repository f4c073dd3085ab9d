import { type Kysely, sql } from 'kysely'
import { errorMessage, ViewRunError } from '../errors/matview-error.js'
import { type HandwrittenView, OPERATIONS } from '../views/handwritten.js'
import type { ViewContext } from '../views/view-context.js'
import type { KindRunner, PendingWork } from './kind-runner.js'
import { silentLogger } from './logger.js'

const COUNTER = { insert: 'inserted', update: 'updated', delete: 'deleted' } as const

/**
 * Runs a hand-written view the way the DESIGN describes: ask `needsX`; while it is above zero,
 * run `doX` in a transaction of its own and ask again. A batch that handles nothing, or after
 * which the need does not fall, is an error for the view: never an endless loop.
 */
export const handwrittenRunner: KindRunner<HandwrittenView> = {
  async run(view, ctx) {
    const hookCtx = (db: Kysely<any>): ViewContext => ({
      view: view.name,
      db,
      sql,
      batchSize: ctx.batchSize,
      signal: ctx.signal,
      logger: ctx.logger,
    })
    const needs = await measure(view, hookCtx(ctx.conn))
    let total = needs.total
    let done = 0
    ctx.progress(done, total)
    for (const op of OPERATIONS) {
      const needsHook = view[op.needs]
      const applyHook = view[op.apply]
      if (!needsHook || !applyHook) continue
      let need = needs.detail[op.kind] ?? 0
      while (need > 0) {
        const stop = ctx.shouldStop()
        if (stop) return stop
        const began = performance.now()
        const result: unknown = await ctx.conn
          .transaction()
          .execute(async (trx) => callHook(view.name, op.apply, () => applyHook(hookCtx(trx))))
        if (typeof result !== 'number' || !Number.isInteger(result) || result < 0) {
          throw new ViewRunError(
            view.name,
            `${op.apply} returned ${String(result)}; it must return how many rows it handled`,
          )
        }
        const handled = result
        ctx.onBatch?.(performance.now() - began)
        ctx.counts.batches++
        ctx.counts[COUNTER[op.kind]] += handled
        const after = checkCount(
          view.name,
          op.needs,
          await callHook(view.name, op.needs, () => needsHook(hookCtx(ctx.conn))),
        )
        if (handled === 0) {
          throw new ViewRunError(
            view.name,
            `${op.apply} handled 0 rows while ${op.needs} reported ${need}; stopping instead of looping`,
            {
              code: 'VIEW_NO_PROGRESS',
            },
          )
        }
        if (after >= need) {
          throw new ViewRunError(
            view.name,
            `${op.needs} stayed at ${after} after ${op.apply} handled ${handled} rows (was ${need}); stopping instead of looping`,
            { code: 'VIEW_NO_PROGRESS' },
          )
        }
        done += handled
        total = Math.max(total, done + after)
        need = after
        ctx.progress(done, total)
      }
    }
    return undefined
  },

  async pending(view, db, _schema, batchSize) {
    return measure(view, {
      view: view.name,
      db,
      sql,
      batchSize,
      signal: new AbortController().signal,
      logger: silentLogger,
    })
  },
}

async function measure(view: HandwrittenView, ctx: ViewContext): Promise<PendingWork> {
  const detail: Record<string, number> = {}
  let total = 0
  for (const op of OPERATIONS) {
    const hook = view[op.needs]
    if (!hook) continue
    const count = checkCount(
      view.name,
      op.needs,
      await callHook(view.name, op.needs, () => hook(ctx)),
    )
    detail[op.kind] = count
    total += count
  }
  return { total, detail }
}

/**
 * Calls a hook; what it throws becomes an error naming the view and the hook, with the hook's
 * own error (and its stack, printed by `-v`) as the cause.
 */
async function callHook<T>(view: string, hook: string, call: () => T | Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (error) {
    throw new ViewRunError(view, `${hook} threw: ${errorMessage(error)}`, { cause: error })
  }
}

function checkCount(view: string, hook: string, value: unknown): number {
  // Drivers return count(*) as a string or bigint; accept those, refuse anything else.
  const count = typeof value === 'bigint' || typeof value === 'string' ? Number(value) : value
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 0) {
    throw new ViewRunError(
      view,
      `${hook} returned ${String(value)}; it must return a count (a whole number, 0 or more)`,
    )
  }
  return count
}
