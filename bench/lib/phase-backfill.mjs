// d. Backfill throughput: the first `update` of a new view (create + backfill) against
// `CREATE TABLE AS` of its query, on the same data, alternating which goes first.
import { ident } from './env.mjs'
import { ms } from './format.mjs'
import { median, time } from './measure.mjs'
import { customerTotalsSql, customerTotalsView } from './workload.mjs'

const CATALOG = 'matview_backfill'
const VIEW = 'customer_totals_backfill'

export async function backfillPhase(ctx) {
  const { env, plan, results } = ctx
  const query = customerTotalsSql()
  const ctas = []
  const ctasWithKey = []
  const fills = []
  for (let rep = 0; rep < plan.backfillReps; rep++) {
    const runCtas = async () => {
      const created = await time(() => env.exec(`CREATE TABLE bench_ctas AS ${query}`))
      const keyed = await time(() =>
        env.exec('ALTER TABLE bench_ctas ADD PRIMARY KEY (customer_id)'),
      )
      await env.exec('DROP TABLE bench_ctas')
      ctas.push(created.ms)
      ctasWithKey.push(created.ms + keyed.ms)
    }
    const runFill = async () => {
      const last = rep === plan.backfillReps - 1
      const m = await env.openMatview({
        schema: CATALOG,
        batchSize: plan.batchSize,
        views: [customerTotalsView(VIEW)],
      })
      try {
        const record = env.statements ? (fn) => env.statements.record(fn) : (fn) => fn()
        const filled = await time(() => record(() => m.update()))
        fills.push(filled.ms)
        if (last && env.statements) {
          await explainBackfill(ctx, query).catch((error) =>
            results.diagnostic('backfill: EXPLAIN failed', String(error?.message ?? error)),
          )
        }
      } finally {
        await m.close()
      }
      await env.exec(`DROP TABLE ${ident(VIEW)}`)
      await env.exec(`DROP SCHEMA ${ident(CATALOG)} CASCADE`)
    }
    if (rep % 2 === 0) {
      await runCtas()
      await runFill()
    } else {
      await runFill()
      await runCtas()
    }
    ctx.log(
      `backfill rep ${rep + 1}: matview ${ms(fills.at(-1))}, CREATE TABLE AS ${ms(ctas.at(-1))}`,
    )
  }
  const fill = median(fills)
  results.add({
    group: 'backfill',
    name: 'backfill (first update: create + backfill) vs CREATE TABLE AS',
    matview: ms(fill),
    baseline: ms(median(ctas)),
    ratio: fill / median(ctas),
    target: { text: '≤ 1.2× CTAS', met: fill / median(ctas) <= 1.2 },
  })
  results.add({
    group: 'backfill',
    name: '  (info) vs CREATE TABLE AS + ADD PRIMARY KEY',
    matview: ms(fill),
    baseline: ms(median(ctasWithKey)),
    ratio: fill / median(ctasWithKey),
  })
}

/**
 * What bounds the backfill: matview's statements by total time, and EXPLAIN ANALYZE of its
 * median key-range statement (re-run on an emptied target, rolled back) next to the plan of
 * the query that CREATE TABLE AS runs.
 */
async function explainBackfill(ctx, query) {
  const { env, results } = ctx
  const groups = env.statements.summary()
  results.breakdown('backfill: statements of the first update', groups)
  // The range statements: the data statement with the most time in all.
  const ranges = env.statements.dataStatements()[0]
  if (!ranges) return
  const sorted = [...ranges.entries].sort((a, b) => a.ms - b.ms)
  const typical = sorted[Math.floor(sorted.length / 2)]
  await env.exec('BEGIN')
  try {
    await env.exec(`TRUNCATE ${ident(VIEW)}`)
    const { rows } = await env.exec(`EXPLAIN (ANALYZE, BUFFERS) ${typical.sql}`, typical.parameters)
    results.diagnostic(
      `backfill: EXPLAIN ANALYZE of the key-range statement with the most time in all (${ranges.calls} call(s) of it; this one with parameters ${JSON.stringify(typical.parameters)}), re-run on an emptied target and rolled back`,
      rows.map((r) => r['QUERY PLAN']).join('\n'),
    )
  } finally {
    await env.exec('ROLLBACK')
  }
  const { rows } = await env.exec(`EXPLAIN (ANALYZE, BUFFERS) ${query}`)
  results.diagnostic(
    'backfill: EXPLAIN ANALYZE of the query CREATE TABLE AS runs',
    rows.map((r) => r['QUERY PLAN']).join('\n'),
  )
}
