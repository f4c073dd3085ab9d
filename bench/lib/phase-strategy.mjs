// f. The automatic strategy: for change sets of a growing share of the view's keys, the time of
// an update that applies them in batches, of one that rebuilds, and what `auto` chose.
import { count, ms, ratio } from './format.mjs'
import { time } from './measure.mjs'
import { changeOrders } from './workload.mjs'

const SHARES = [0.01, 0.05, 0.1, 0.2, 0.3, 0.5]

/** One update of a fresh change set of `n` keys with the given strategy. */
async function timed(ctx, n, strategy) {
  const { env, plan, size, main } = ctx
  const change = await changeOrders(env, ctx.random, n, size.customers)
  const run = await time(() => main.update({ batchSize: plan.batchSize, strategy }))
  const view = run.result.views[0]
  if (view.outcome !== 'done')
    throw new Error(`update (${strategy}) ended ${view.outcome}: ${view.error ?? view.reason}`)
  const rebuilt = (view.notes ?? []).some((note) => note.startsWith('rebuilt'))
  return { ms: run.ms, keys: change.keys, rebuilt }
}

export async function strategyPhase(ctx) {
  const { results, size, log } = ctx
  for (const share of SHARES) {
    const n = Math.round(share * size.customers)
    const incremental = await timed(ctx, n, 'incremental')
    const rebuild = await timed(ctx, n, 'rebuild')
    const auto = await timed(ctx, n, 'auto')
    const chose = auto.rebuilt ? 'rebuild' : 'incremental'
    const other = auto.rebuilt ? incremental.ms : rebuild.ms
    const best = Math.min(incremental.ms, rebuild.ms)
    log(
      `${Math.round(share * 100)}% of keys (${count(auto.keys)}): incremental ${ms(incremental.ms)}, rebuild ${ms(rebuild.ms)}, auto chose ${chose} (${ms(auto.ms)})`,
    )
    results.add({
      group: 'strategy',
      name: `changes to ${Math.round(share * 100)} % of the keys (${count(auto.keys)} keys): auto chose ${chose}`,
      matview: ms(auto.ms),
      baseline: `incremental ${ms(incremental.ms)} · rebuild ${ms(rebuild.ms)}`,
      ratio: other / auto.ms,
      ratioText: `${ratio(other / auto.ms)} faster than the other choice`,
      // One run each: a choice is right when it took the cheaper side (within 15 % noise).
      target: {
        text: 'the cheaper of the two',
        met: (auto.rebuilt ? rebuild.ms : incremental.ms) <= best * 1.15,
      },
    })
  }
}
