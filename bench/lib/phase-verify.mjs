// f. `verify`: comparing the view with its query in key ranges, against the one-statement check
// a user would otherwise run (EXCEPT both ways over the whole query).
import { ident } from './env.mjs'
import { count, ms, ratio } from './format.mjs'
import { median, time } from './measure.mjs'
import { customerTotalsSql } from './workload.mjs'

export async function verifyPhase(ctx) {
  const { env, plan, results, main } = ctx
  const target = ident('customer_totals')
  const oneStatement = () =>
    env.exec(
      `SELECT (SELECT count(*) FROM (TABLE ${target} EXCEPT (${customerTotalsSql()})) AS a) AS extra,
              (SELECT count(*) FROM ((${customerTotalsSql()}) EXCEPT TABLE ${target}) AS b) AS missing`,
    )
  const verifies = []
  const baselines = []
  let last
  for (let rep = 0; rep < plan.verifyReps; rep++) {
    // Alternate which goes first, so neither always finds the cache warmed by the other.
    const runVerify = async () => {
      const timed = await time(() => main.mv.verify(['customer_totals']))
      verifies.push(timed.ms)
      last = timed.result.views[0]
    }
    const runBaseline = async () => baselines.push((await time(oneStatement)).ms)
    if (rep % 2 === 0) {
      await runVerify()
      await runBaseline()
    } else {
      await runBaseline()
      await runVerify()
    }
    ctx.log(
      `verify: ${ms(verifies.at(-1))} (${last?.outcome}, ${count(last?.rows ?? 0)} rows in ${last?.ranges} ranges), EXCEPT both ways ${ms(baselines.at(-1))}`,
    )
  }
  if (last?.outcome !== 'equal') {
    results.failed = true
    results.note(`CHECK FAILED: verify found the view ${last?.outcome}, not equal.`)
  }
  const slower = median(verifies) / median(baselines)
  results.add({
    group: 'verify',
    name: `verify customer_totals (${count(last?.rows ?? 0)} rows, ${last?.ranges} key ranges of one read-only statement each; median of ${plan.verifyReps})`,
    matview: ms(median(verifies)),
    baseline: ms(median(baselines)),
    ratio: 1 / slower,
    ratioText: `${ratio(slower)} the time`,
  })
}
