// a, b, e: applying changes through `mv.update()` against REFRESH MATERIALIZED VIEW
// CONCURRENTLY of the same query on the same data, and an update with nothing to do.
import { ident } from './env.mjs'
import { count, ms, ratio } from './format.mjs'
import { median, time } from './measure.mjs'
import { burst, changeOrders, customerTotalsSql } from './workload.mjs'

export const REFRESH_MV = 'bench_refresh'

/** The materialized view REFRESH CONCURRENTLY works on: the same query, a unique index on the key. */
export async function createRefreshView(env) {
  await env.exec(`CREATE MATERIALIZED VIEW ${ident(REFRESH_MV)} AS ${customerTotalsSql()}`)
  await env.exec(`CREATE UNIQUE INDEX ON ${ident(REFRESH_MV)} (customer_id)`)
}

const refresh = (env) => env.exec(`REFRESH MATERIALIZED VIEW CONCURRENTLY ${ident(REFRESH_MV)}`)

/** Times `update` and the REFRESH on the same data, alternating which goes first. */
async function applyAndRefresh(ctx, rep, batchSize, strategy) {
  const { env, main } = ctx
  const record = env.statements ? (fn) => env.statements.record(fn) : (fn) => fn()
  const options = strategy ? { batchSize, strategy } : { batchSize }
  const runUpdate = () => time(() => record(() => main.update(options)))
  const runRefresh = () => time(() => refresh(env))
  if (rep % 2 === 0) {
    const applied = await runUpdate()
    const refreshed = await runRefresh()
    return { apply: applied.ms, refresh: refreshed.ms, summary: applied.result }
  }
  const refreshed = await runRefresh()
  const applied = await runUpdate()
  return { apply: applied.ms, refresh: refreshed.ms, summary: applied.result }
}

/** a. 100, 1,000 and 10,000 changed keys (one random order update per key, some moving). */
export async function applyPhase(ctx) {
  const { env, plan, results, size } = ctx
  for (const [n, reps, minimum] of plan.changeSets) {
    const applies = []
    const refreshes = []
    let keys = 0
    let batches = 0
    for (let rep = 0; rep < reps; rep++) {
      const change = await changeOrders(env, ctx.random, n, size.customers)
      keys = change.keys
      const run = await applyAndRefresh(ctx, rep, plan.batchSize)
      batches = run.summary?.views?.[0]?.batches ?? batches
      applies.push(run.apply)
      refreshes.push(run.refresh)
      ctx.log(
        `apply ${count(change.keys)} keys (${count(change.orders)} orders): matview ${ms(run.apply)}, REFRESH CONCURRENTLY ${ms(run.refresh)}`,
      )
      if (rep === reps - 1 && env.statements) {
        results.breakdown(
          `apply ${count(n)} keys: statements of one update (${ms(run.apply)} in all)`,
          env.statements.summary(),
        )
        if (n === plan.changeSets[0][0]) await explainApply(ctx, change.ids)
      }
    }
    const speedup = median(refreshes) / median(applies)
    results.add({
      group: 'apply',
      name: `apply ${count(keys)} changed keys (batchSize ${count(plan.batchSize)}, ${batches} batch${batches === 1 ? '' : 'es'})`,
      matview: ms(median(applies)),
      baseline: ms(median(refreshes)),
      ratio: speedup,
      ratioText: `${ratio(speedup)} faster`,
      target: minimum
        ? { text: `≥ ${minimum}× faster`, met: speedup >= minimum }
        : { text: '(none)', met: undefined },
    })
  }
}

/**
 * EXPLAIN ANALYZE of the statements of a 100-key update: the same orders are written again so
 * the same keys are pending, then matview's own statements (as it sent them, with their
 * parameters) are explained in a transaction that is rolled back, and the keys are drained.
 */
async function explainApply(ctx, ids) {
  const { env, results } = ctx
  const groups = env.statements.dataStatements().slice(0, 2)
  await env.exec('UPDATE orders SET amount_cents = amount_cents + 1 WHERE id = ANY($1::bigint[])', [
    ids,
  ])
  await env.exec('BEGIN')
  try {
    if (groups.length === 0) throw new Error('no statements were recorded')
    for (const group of groups) {
      const entry = group.entries[0]
      const { rows } = await env.exec(`EXPLAIN (ANALYZE, BUFFERS) ${entry.sql}`, entry.parameters)
      results.diagnostic(
        `apply ${count(ids.length)} keys: EXPLAIN ANALYZE of a statement matview sent (${ms(entry.ms)} when it ran)`,
        `${entry.sql.replace(/\s+/g, ' ').trim()}\n\n${rows.map((r) => r['QUERY PLAN']).join('\n')}`,
      )
    }
  } catch (error) {
    results.diagnostic('apply: EXPLAIN failed', String(error?.message ?? error))
  } finally {
    await env.exec('ROLLBACK')
  }
  await ctx.main.update({ batchSize: ctx.plan.batchSize })
}

/** The change log's rows and distinct keys, read from matview's catalog (for the report only). */
async function logSize(ctx) {
  const { env } = ctx
  try {
    const { rows } = await env.exec('SELECT id FROM matview.views WHERE name = $1', [
      'customer_totals',
    ])
    // Captured keys wait in the inbox until a claim moves them to the log: count both.
    const waiting = `(SELECT customer_id FROM ${ident('matview', `log_${rows[0].id}`)}
      UNION ALL SELECT unnest(customer_id) FROM ${ident('matview', `inbox_${rows[0].id}`)}) AS w`
    const counted = await env.exec(
      `SELECT count(*)::int AS n, count(DISTINCT customer_id)::int AS keys FROM ${waiting}`,
    )
    return counted.rows[0]
  } catch {
    return undefined
  }
}

/** b. Drain after a burst: the change log holds several rows for (nearly) every key. */
export async function drainPhase(ctx) {
  const { env, plan, results, size } = ctx
  const drains = []
  const refreshes = []
  let held
  let lastNotes
  for (let rep = 0; rep < plan.drainReps; rep++) {
    const written = await burst(env, plan.burstStatements, size.customers)
    held = await logSize(ctx)
    const run = await applyAndRefresh(ctx, rep, plan.batchSize)
    drains.push(run.apply)
    refreshes.push(run.refresh)
    lastNotes = run.summary?.views?.[0]?.notes
    ctx.log(
      `drain after a burst of ${count(written)} order updates (${held ? `${count(held.n)} captured rows, ${count(held.keys)} keys` : 'log size unknown'}): matview ${ms(run.apply)}, REFRESH CONCURRENTLY ${ms(run.refresh)}`,
    )
    if (rep === plan.drainReps - 1 && env.statements) {
      results.breakdown(
        `drain: statements of one update (${ms(run.apply)} in all)`,
        env.statements.summary(),
      )
    }
  }
  const speedup = median(refreshes) / median(drains)
  const what = held ? `${count(held.n)} captured rows for ${count(held.keys)} keys` : 'a burst'
  results.add({
    group: 'drain',
    name: `drain after a burst (${what}; ${plan.burstStatements} UPDATEs of ${count(size.customers)} rows; batchSize ${count(plan.batchSize)})`,
    matview: ms(median(drains)),
    baseline: ms(median(refreshes)),
    ratio: speedup,
    ratioText: `${ratio(speedup)} faster`,
    target: { text: 'no slower (≥ 1×)', met: speedup >= 1 },
  })
  const chose = (runNotes) =>
    (runNotes ?? []).some((n) => n.startsWith('rebuilt')) ? 'a rebuild' : 'batches'
  results.note(
    `The drain ran with the default strategy (auto), which applied it by ${chose(lastNotes)}.`,
  )
  // The same drain forced through batches: what the automatic choice saved.
  await burst(env, plan.burstStatements, size.customers)
  const batched = await applyAndRefresh(ctx, 0, plan.batchSize, 'incremental')
  results.add({
    group: 'drain',
    name: `  (info) the same drain in batches of ${count(plan.batchSize)} (--strategy incremental), one run`,
    matview: ms(batched.apply),
    baseline: ms(batched.refresh),
    ratio: batched.refresh / batched.apply,
    ratioText: `${ratio(batched.refresh / batched.apply)} faster`,
  })
  ctx.log(
    `drain in batches: matview ${ms(batched.apply)}, REFRESH CONCURRENTLY ${ms(batched.refresh)}`,
  )
  await checkEqual(ctx)
}

/** After a drain the target must equal the query: compared with the refreshed materialized view. */
export async function checkEqual(ctx) {
  const { env, results } = ctx
  const target = ident('customer_totals')
  const mv = ident(REFRESH_MV)
  await refresh(env)
  const { rows } = await env.exec(
    `SELECT (SELECT count(*) FROM (TABLE ${target} EXCEPT TABLE ${mv}) AS a)::int AS extra,
            (SELECT count(*) FROM (TABLE ${mv} EXCEPT TABLE ${target}) AS b)::int AS missing`,
  )
  const { extra, missing } = rows[0]
  const ok = extra === 0 && missing === 0
  results.note(
    ok
      ? 'Check: after the last drain, customer_totals equals the query (EXCEPT both ways is empty).'
      : `CHECK FAILED: after the last drain customer_totals differs from the query: ${extra} extra, ${missing} missing rows.`,
  )
  if (!ok) results.failed = true
}

/** The log the capture phase left: drained once, timed, next to a REFRESH (for information). */
export async function drainCaptureLog(ctx) {
  const { env, results, plan } = ctx
  const held = await logSize(ctx)
  const run = await applyAndRefresh(ctx, 0, plan.batchSize)
  const speedup = run.refresh / run.apply
  results.add({
    group: 'drain',
    name: `  (info) drain of the capture phase's log (${held ? `${count(held.n)} captured rows for ${count(held.keys)} keys` : 'size unknown'}), one run`,
    matview: ms(run.apply),
    baseline: ms(run.refresh),
    ratio: speedup,
    ratioText: `${ratio(speedup)} faster`,
  })
  ctx.log(`drained the capture phase's log: ${ms(run.apply)}`)
  if (env.dialect === 'postgres') await env.exec('VACUUM ANALYZE orders')
}

/** e. `update` with nothing to do, on one open Matview. */
export async function noopPhase(ctx) {
  const { env, plan, results, main } = ctx
  for (let i = 0; i < 5; i++) await main.update()
  const samples = []
  for (let i = 0; i < plan.noopCalls; i++) samples.push((await time(() => main.update())).ms)
  if (env.statements) {
    await env.statements.record(() => main.update())
    results.breakdown('no-op update: statements of one call', env.statements.summary())
  }
  const cost = median(samples)
  results.add({
    group: 'noop',
    name: `update with nothing to do, 1 view (median of ${plan.noopCalls} calls on one open Matview)`,
    matview: ms(cost),
    baseline: '',
    ratio: undefined,
    target: { text: '< 5 ms per view', met: cost < 5 },
  })
  ctx.log(`no-op update: ${ms(cost)}`)
}

/**
 * The no-op update again after the run history has grown. Every update records a run, so a
 * worker polling once a second leaves 86,400 runs a day; the history is aged here by inserting
 * finished runs into matview's run table directly. Runs last, as it slows every later update.
 */
export async function agedNoopPhase(ctx) {
  const { env, plan, results, main } = ctx
  const aged = 100_000
  await env.exec(
    `INSERT INTO matview.runs (view, outcome, finished_at)
     SELECT $1, 'done', now() FROM generate_series(1, $2::int)`,
    ['customer_totals', aged],
  )
  await env.exec('ANALYZE matview.runs')
  for (let i = 0; i < 5; i++) await main.update()
  const agedSamples = []
  for (let i = 0; i < plan.noopCalls; i++) agedSamples.push((await time(() => main.update())).ms)
  if (env.statements) {
    await env.statements.record(() => main.update())
    results.breakdown(
      `no-op update after ${count(aged)} recorded runs: statements of one call`,
      env.statements.summary(),
    )
  }
  results.add({
    group: 'noop',
    name: `  (info) the same after ${count(aged)} earlier runs in the catalog (about a day of a worker polling every second)`,
    matview: ms(median(agedSamples)),
    baseline: '',
    ratio: undefined,
  })
  ctx.log(`no-op update after ${count(aged)} runs: ${ms(median(agedSamples))}`)
}
