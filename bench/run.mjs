// `npm run bench`: matview against REFRESH MATERIALIZED VIEW CONCURRENTLY, CREATE TABLE AS and
// plain writes on the canonical workload of DESIGN, side by side in one run. See --help.

import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { Command, Option } from 'commander'
import { openPglite, openPostgres } from './lib/env.mjs'
import { ms } from './lib/format.mjs'
import {
  agedNoopPhase,
  applyPhase,
  createRefreshView,
  drainCaptureLog,
  drainPhase,
  noopPhase,
} from './lib/phase-apply.mjs'
import { backfillPhase } from './lib/phase-backfill.mjs'
import { capturePhase, PLAIN, tpcbPhase } from './lib/phase-capture.mjs'
import { latencyPhase } from './lib/phase-latency.mjs'
import { partitionsPhase } from './lib/phase-partitions.mjs'
import { strategyPhase } from './lib/phase-strategy.mjs'
import { verifyPhase } from './lib/phase-verify.mjs'
import { machineInfo, Results, section, writeResults } from './lib/report.mjs'
import { createTables, customerTotalsView, rng, SIZES } from './lib/workload.mjs'

const PHASES = [
  'backfill',
  'capture',
  'pgbench',
  'noop',
  'apply',
  'drain',
  'strategy',
  'verify',
  'latency',
  'partitions',
]

const positive = (name) => (value) => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`)
  return n
}

const program = new Command('npm run bench --')
  .description(
    'Benchmarks matview on the canonical workload (DESIGN): apply and drain vs REFRESH MATERIALIZED VIEW CONCURRENTLY, capture overhead vs the same writes without a view (and pgbench TPC-B), backfill vs CREATE TABLE AS, a no-op update, and one view with `partitions: 4` drained by 1 to 4 update processes. Prints a table with the targets of issue 3 and writes it to bench/RESULTS.md.',
  )
  .addOption(
    new Option('--dialect <dialect>', 'database to run on')
      .choices(['postgres', 'pglite'])
      .default('postgres'),
  )
  .addOption(
    new Option(
      '--size <size>',
      'full: 100,000 customers / 2,000,000 orders; small: 10,000 / 200,000; tiny: 1,000 / 20,000 (default: full on postgres, small on pglite)',
    ).choices(Object.keys(SIZES)),
  )
  .option(
    '--server <url>',
    'PostgreSQL server; the run creates a database matview_bench_<random> on it and drops it at the end',
    process.env.MATVIEW_BENCH_SERVER ?? 'postgres://postgres@127.0.0.1:5432/postgres',
  )
  .option(
    '--batch-size <n>',
    'matview batchSize for apply and drain',
    positive('--batch-size'),
    1000,
  )
  .option(
    '--reps <n>',
    'repetitions of every measurement (default: 3 to 15 by measurement)',
    positive('--reps'),
  )
  .option(
    '--seconds <n>',
    'duration of each pgbench run (default: 6 full, 3 otherwise)',
    positive('--seconds'),
  )
  .option('--only <phases>', `comma-separated phases to run: ${PHASES.join(', ')}`)
  .option('--seed <n>', 'seed of the random change sets', positive('--seed'), 1)
  .option('--pgbench <path>', 'the pgbench binary', 'pgbench')
  .option('--out <file>', 'results file', fileURLToPath(new URL('./RESULTS.md', import.meta.url)))
  .option('--no-write', 'print only; leave the results file alone')
  .option('--keep', 'keep the benchmark database (PostgreSQL) for a look afterwards')
  .option('--verbose', 'also print the statement breakdowns and plans')
  .addHelpText(
    'after',
    `
Examples:
  npm run bench                          full size on PostgreSQL (about 8 minutes on 2 cores)
  npm run bench -- --size small          a quick run
  npm run bench -- --dialect pglite      the same measurements on PGlite (small size)
  npm run bench -- --only apply,noop --no-write`,
  )

function makePlan(opts, size, dialect) {
  const full = size.customers >= SIZES.full.customers
  const reps = (n) => opts.reps ?? n
  const changeSets = []
  for (const [n, r, minimum] of [
    [100, 7, 100],
    [1000, 5, 25],
    [10000, 3, undefined],
  ]) {
    const keys = Math.min(n, size.customers)
    if (!changeSets.some(([k]) => k === keys)) changeSets.push([keys, reps(r), minimum])
  }
  const plan = {
    batchSize: opts.batchSize,
    changeSets,
    drainReps: reps(3),
    burstStatements: 4,
    backfillReps: reps(3),
    pgbenchReps: reps(5),
    seconds: opts.seconds ?? (full ? 6 : 3),
    pgbenchScale: full ? 10 : 2,
    bulkRows: size.customers >= SIZES.small.customers ? 100_000 : 10_000,
    bulkReps: reps(5),
    updateReps: reps(15),
    singleInserts: 2000,
    noopCalls: 50,
    verifyReps: reps(3),
  }
  plan.describe = [
    `apply ${changeSets.map(([k, r]) => `${k.toLocaleString('en-US')} keys × ${r}`).join(', ')}`,
    `drain × ${plan.drainReps}`,
    `backfill × ${plan.backfillReps}`,
    dialect === 'postgres'
      ? `pgbench runs × ${plan.pgbenchReps} of ${plan.seconds} s per side`
      : `${plan.singleInserts} single-row INSERTs × ${plan.pgbenchReps} per side`,
    `INSERT … SELECT × ${plan.bulkReps}`,
    `1,000-row UPDATE × ${plan.updateReps}`,
    `no-op update × ${plan.noopCalls}`,
    `verify × ${plan.verifyReps}`,
    'partitions: one drain each with 1 to 4 processes',
  ].join('; ')
  return plan
}

async function main() {
  program.parse()
  const opts = program.opts()
  const dialect = opts.dialect
  const sizeName = opts.size ?? (dialect === 'postgres' ? 'full' : 'small')
  const size = SIZES[sizeName]
  const only = opts.only ? opts.only.split(',').map((s) => s.trim()) : PHASES
  for (const phase of only) {
    if (!PHASES.includes(phase))
      program.error(`--only: unknown phase "${phase}" (${PHASES.join(', ')})`)
  }
  const wants = (phase) => only.includes(phase)
  const plan = makePlan(opts, size, dialect)
  const args = process.argv.slice(2)
  const command = `npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}`

  const started = new Date()
  const t0 = performance.now()
  const log = (message) =>
    process.stderr.write(
      `[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}\n`,
    )
  const results = new Results()
  log(`${dialect}, ${sizeName} size: ${size.customers} customers, ${size.orders} orders`)

  const env = dialect === 'postgres' ? await openPostgres(opts.server, opts) : await openPglite()
  if (env.dialect === 'postgres') log(`database ${env.database}${opts.keep ? ' (kept)' : ''}`)
  const onSignal = (signal) => {
    log(`${signal}: cleaning up`)
    env.close().finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  if (sizeName !== 'full') {
    results.note(
      `The targets are set for the full size (100,000 customers, 2,000,000 orders). At the ${sizeName} size REFRESH and CREATE TABLE AS have less data to read while an apply of the same number of keys costs about the same, so the apply and drain ratios here are lower than at the full size.`,
    )
  }
  let main
  const ctx = { env, opts, plan, size, results, log, random: rng(opts.seed), main: undefined }
  try {
    const machine = await machineInfo(env)
    log('creating the tables')
    await createTables(env, 'public', size)
    if (wants('capture')) await createTables(env, PLAIN, size)
    await env.exec('VACUUM ANALYZE')

    if (wants('backfill')) {
      log('d. backfill vs CREATE TABLE AS')
      await backfillPhase(ctx)
    }
    if (['capture', 'noop', 'apply', 'drain', 'strategy', 'verify', 'latency'].some(wants)) {
      log('creating the view customer_totals and the materialized view for REFRESH')
      main = await env.openMatview({ batchSize: plan.batchSize, views: [customerTotalsView()] })
      ctx.main = main
      await main.update()
      await createRefreshView(env)
    }
    if (wants('capture')) {
      log('c. capture overhead')
      await capturePhase(ctx)
    }
    if (wants('pgbench')) {
      if (env.dialect === 'postgres') {
        log('c. pgbench TPC-B-like with and without a view')
        await tpcbPhase(ctx)
      } else if (!wants('capture')) {
        results.note('PGlite has one connection: the pgbench runs are skipped.')
      }
    }
    if (wants('capture') && ['noop', 'apply', 'drain'].some(wants)) {
      log("draining the capture phase's change log")
      await drainCaptureLog(ctx)
    }
    if (wants('noop')) {
      log('e. update with nothing to do')
      await noopPhase(ctx)
    }
    if (wants('apply')) {
      log('a. apply vs REFRESH MATERIALIZED VIEW CONCURRENTLY')
      await applyPhase(ctx)
    }
    if (wants('drain')) {
      log('b. drain after a burst vs REFRESH MATERIALIZED VIEW CONCURRENTLY')
      await drainPhase(ctx)
    }
    if (wants('strategy')) {
      log('f. incremental vs rebuild, and what auto chose')
      await strategyPhase(ctx)
    }
    if (wants('verify')) {
      log('f. verify vs EXCEPT both ways')
      await verifyPhase(ctx)
    }
    if (wants('latency')) {
      log('g. change-driven latency with a matview worker')
      await latencyPhase(ctx)
    }
    if (wants('noop')) {
      log('e. update with nothing to do, after a long run history')
      await agedNoopPhase(ctx)
    }
    // Last: its bursts go to every view's log, and would leave the other phases work to do.
    if (wants('partitions')) {
      log('h. one partitioned view drained by 1 to 4 update processes')
      await partitionsPhase(ctx)
    }
    // Keep the table's order the same whatever order the phases ran in.
    const groups = [
      'apply',
      'drain',
      'strategy',
      'capture',
      'backfill',
      'noop',
      'verify',
      'latency',
      'partitions',
    ]
    const rank = (r) => groups.indexOf(r.group) * 2 + (r.name.includes('(info)') ? 1 : 0)
    results.rows.sort((a, b) => rank(a) - rank(b))

    const elapsedMs = performance.now() - t0
    const run = {
      title: `${dialect === 'postgres' ? 'PostgreSQL' : 'PGlite'}, ${sizeName} size`,
      command,
      started,
      elapsedMs,
      loadAtEnd: os.loadavg(),
      machine,
      plan,
      size,
      results,
    }
    process.stdout.write(`\n${run.title} (${ms(elapsedMs)})\n\n${results.text()}\n`)
    if (opts.verbose) {
      for (const b of results.breakdowns) {
        process.stdout.write(`\n${b.title}\n${b.rows.map((r) => `  ${r.join('  ')}`).join('\n')}\n`)
      }
      for (const d of results.diagnostics) process.stdout.write(`\n${d.title}\n${d.text}\n`)
    }
    if (opts.write) {
      await writeResults(opts.out, `${dialect}-${sizeName}`, section(run))
      log(`wrote ${opts.out}`)
    }
    if (results.failed) process.exitCode = 1
  } finally {
    await main?.close().catch(() => {})
    await env.close()
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

main().catch((error) => {
  process.stderr.write(`bench failed: ${error?.stack ?? error}\n`)
  process.exitCode = 1
})
