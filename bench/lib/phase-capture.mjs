// c. The capture's write overhead: the same writes on two identical table sets, `public` (with
// the view customer_totals and its triggers) and `bench_plain` (no view), alternating which goes
// first; and pgbench's TPC-B-like run on two pgbench table sets, one with a view over
// pgbench_accounts.
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { defineView, sql } from '../../dist/index.js'
import { ident } from './env.mjs'
import { count, ms, tps } from './format.mjs'
import { median, pgbench, time } from './measure.mjs'
import { sample } from './workload.mjs'

export const PLAIN = 'bench_plain'
const VIEWED = 'public'

/** Runs `fn(schema)` for both table sets, `rep` times, in ABBA order; returns the samples. */
async function sideBySide(reps, fn) {
  const samples = { [VIEWED]: [], [PLAIN]: [] }
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? [PLAIN, VIEWED] : [VIEWED, PLAIN]
    for (const schema of order) samples[schema].push(await fn(schema, rep))
  }
  return { viewed: samples[VIEWED], plain: samples[PLAIN] }
}

async function vacuumBoth(env) {
  for (const schema of [VIEWED, PLAIN]) {
    await env.exec(`VACUUM ANALYZE ${ident(schema, 'orders')}`)
    await env.exec(`VACUUM ANALYZE ${ident(schema, 'customers')}`)
  }
  if (env.dialect === 'postgres') await env.exec('CHECKPOINT')
}

export async function capturePhase(ctx) {
  const { env, plan, results, size } = ctx
  await vacuumBoth(env)

  if (env.dialect === 'postgres') {
    const dir = await mkdtemp(join(tmpdir(), 'matview-bench-'))
    try {
      const script = join(dir, 'insert-order.sql')
      await writeFile(
        script,
        [
          '\\set cid random(1, :customers)',
          '\\set amount random(100, 10099)',
          "INSERT INTO orders (customer_id, amount_cents, status) VALUES (:cid, :amount, 'paid');",
          '',
        ].join('\n'),
      )
      for (const [clients, threads, limit] of [
        [1, 1, 1.1],
        [8, 2, 1.2],
      ]) {
        const runs = await sideBySide(plan.pgbenchReps, async (schema) => {
          await env.exec('CHECKPOINT')
          const rate = await pgbench({
            binary: ctx.opts.pgbench,
            url: env.url,
            schema,
            args: [
              '-n',
              '-f',
              script,
              '-c',
              String(clients),
              '-j',
              String(threads),
              '-T',
              String(plan.seconds),
              '-D',
              `customers=${size.customers}`,
            ],
          })
          ctx.log(`single-row INSERT, ${clients} client(s), ${schema}: ${tps(rate)}`)
          return rate
        })
        const overhead = median(runs.plain) / median(runs.viewed)
        results.add({
          group: 'capture',
          name: `single-row INSERT, ${clients} client${clients > 1 ? 's' : ''} (pgbench -c ${clients} -j ${threads} -T ${plan.seconds})`,
          matview: tps(median(runs.viewed)),
          baseline: tps(median(runs.plain)),
          ratio: overhead,
          target: { text: `≤ ${limit.toFixed(2)}×`, met: overhead <= limit },
        })
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  } else {
    // PGlite has one connection: the single-client case as a loop of parameterized INSERTs.
    const n = plan.singleInserts
    const runs = await sideBySide(plan.pgbenchReps, async (schema) => {
      const insert = `INSERT INTO ${ident(schema, 'orders')} (customer_id, amount_cents, status) VALUES ($1, $2, 'paid')`
      const { ms: took } = await time(async () => {
        for (let i = 0; i < n; i++) await env.exec(insert, [1 + (i % size.customers), 100 + i])
      })
      return took / n
    })
    const overhead = median(runs.viewed) / median(runs.plain)
    results.add({
      group: 'capture',
      name: `single-row INSERT, 1 client (${count(n)} in a loop, per statement)`,
      matview: ms(median(runs.viewed)),
      baseline: ms(median(runs.plain)),
      ratio: overhead,
      target: { text: '≤ 1.10×', met: overhead <= 1.1 },
    })
    results.note('PGlite has one connection: the 8-client INSERT and pgbench runs are skipped.')
  }

  await vacuumBoth(env)
  const bulk = plan.bulkRows
  const inserts = await sideBySide(plan.bulkReps, async (schema) => {
    const { ms: took } = await time(() =>
      env.exec(
        `INSERT INTO ${ident(schema, 'orders')} (customer_id, amount_cents, status)
         SELECT 1 + (g::bigint * 7919) % $1::int, 100 + g % 10000, 'paid'
         FROM generate_series(1, $2::int) AS g`,
        [size.customers, bulk],
      ),
    )
    ctx.log(`INSERT … SELECT of ${count(bulk)} rows, ${schema}: ${ms(took)}`)
    return took
  })
  const bulkOverhead = median(inserts.viewed) / median(inserts.plain)
  results.add({
    group: 'capture',
    name: `one ${count(bulk)}-row INSERT … SELECT`,
    matview: ms(median(inserts.viewed)),
    baseline: ms(median(inserts.plain)),
    ratio: bulkOverhead,
    target: { text: '≤ 1.20×', met: bulkOverhead <= 1.2 },
  })

  await vacuumBoth(env)
  const starts = sample(ctx.random, plan.updateReps, size.orders - 1000).map((s) => s - 1)
  const updates = await sideBySide(plan.updateReps, async (schema, rep) => {
    const { ms: took } = await time(() =>
      env.exec(
        `UPDATE ${ident(schema, 'orders')} SET amount_cents = amount_cents + 1
         WHERE id > $1::bigint AND id <= $1::bigint + 1000`,
        [starts[rep]],
      ),
    )
    return took
  })
  const updateOverhead = median(updates.viewed) / median(updates.plain)
  results.add({
    group: 'capture',
    name: '1,000-row UPDATE (1,000 keys)',
    matview: ms(median(updates.viewed)),
    baseline: ms(median(updates.plain)),
    ratio: updateOverhead,
    target: { text: '≤ 1.15×', met: updateOverhead <= 1.15 },
  })
  ctx.log(
    `1,000-row UPDATE: with view ${ms(median(updates.viewed))}, without ${ms(median(updates.plain))}`,
  )
}

/**
 * pgbench's built-in TPC-B-like script on two table sets made by `pgbench -i`, one of them with
 * a view of per-branch balance sum and count over pgbench_accounts (key bid).
 */
export async function tpcbPhase(ctx) {
  const { env, plan, results } = ctx
  const plain = 'pgbench_plain'
  const viewed = 'pgbench_view'
  for (const schema of [plain, viewed]) {
    await env.exec(`CREATE SCHEMA ${ident(schema)}`)
    await pgbench({
      binary: ctx.opts.pgbench,
      url: env.url,
      schema,
      args: ['-i', '-q', '-s', String(plan.pgbenchScale)],
    })
  }
  const view = defineView({
    name: 'pgbench_view.branch_balances',
    key: ['bid'],
    query: sql`
      SELECT bid, sum(abalance) AS balance, count(*) AS accounts
      FROM pgbench_view.pgbench_accounts GROUP BY bid`,
    sources: { 'pgbench_view.pgbench_accounts': { bid: 'bid' } },
  })
  const m = await env.openMatview({ schema: 'matview_pgbench', views: [view] })
  try {
    await m.update()
  } finally {
    await m.close()
  }
  for (const schema of [plain, viewed]) {
    await env.exec(`VACUUM ANALYZE ${ident(schema, 'pgbench_accounts')}`)
  }
  const rates = { [plain]: [], [viewed]: [] }
  for (let rep = 0; rep < plan.pgbenchReps; rep++) {
    for (const schema of rep % 2 === 0 ? [plain, viewed] : [viewed, plain]) {
      await env.exec('CHECKPOINT')
      const rate = await pgbench({
        binary: ctx.opts.pgbench,
        url: env.url,
        schema,
        args: ['-c', '8', '-j', '2', '-T', String(plan.seconds)],
      })
      rates[schema].push(rate)
      ctx.log(`pgbench TPC-B-like, 8 clients, ${schema}: ${tps(rate)}`)
    }
  }
  const share = median(rates[viewed]) / median(rates[plain])
  results.add({
    group: 'capture',
    name: `pgbench TPC-B-like (-s ${plan.pgbenchScale} -c 8 -j 2 -T ${plan.seconds}), tps with / without`,
    matview: tps(median(rates[viewed])),
    baseline: tps(median(rates[plain])),
    ratio: share,
    target: { text: '≥ 0.95', met: share >= 0.95 },
  })
}
