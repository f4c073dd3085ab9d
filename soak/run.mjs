// `npm run soak`: pgbench's TPC-B-like workload writes while a `matview worker` process keeps
// views over its tables fresh; then the writers stop, the worker drains and stops, and every view
// must equal its query. Reports the tps with and without the views and the lag seen during the
// run. See --help.

import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Command } from 'commander'
import pg from 'pg'
import { pgbench } from '../bench/lib/measure.mjs'
import { writeResults } from '../bench/lib/report.mjs'
import { startWorkerProcess } from '../bench/lib/worker-process.mjs'
import { Matview, sql } from '../dist/index.js'
import { queryDifferences } from '../dist/views/query-differences.js'
import { SOAK_COLUMNS, soakViews } from './views.mjs'

const positive = (name) => (value) => {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`)
  return n
}

const program = new Command('npm run soak --')
  .description(
    "Runs pgbench's TPC-B-like workload (-c clients) against views over pgbench_accounts, pgbench_tellers, pgbench_branches and pgbench_history while a `matview worker` process keeps them fresh, then drains and checks that every view equals its query. Exits 1 when a view differs.",
  )
  .option(
    '--server <url>',
    'PostgreSQL server; the run creates a database matview_soak_<random> and drops it at the end',
    process.env.MATVIEW_BENCH_SERVER ?? 'postgres://postgres@127.0.0.1:5432/postgres',
  )
  .option(
    '--seconds <n>',
    'duration of each pgbench run (without, then with the views)',
    positive('--seconds'),
    60,
  )
  .option('--scale <n>', 'pgbench scale factor (100,000 accounts each)', positive('--scale'), 10)
  .option('--clients <n>', 'pgbench clients', positive('--clients'), 8)
  .option('--pgbench <path>', 'the pgbench binary', 'pgbench')
  .option(
    '--out <file>',
    'results file',
    fileURLToPath(new URL('../bench/RESULTS.md', import.meta.url)),
  )
  .option('--no-write', 'print only; leave the results file alone')
  .option('--json', 'print the result as JSON on stdout')
  .option('--keep', 'keep the database for a look afterwards')
  .addHelpText(
    'after',
    `
Examples:
  npm run soak                              60 s per side at scale 10 (about 3 minutes)
  npm run soak -- --seconds 10 --scale 1    a quick run`,
  )

async function main() {
  program.parse()
  const opts = program.opts()
  const t0 = performance.now()
  const log = (message) =>
    process.stderr.write(
      `[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}\n`,
    )
  const name = `matview_soak_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: opts.server })
  await admin.connect()
  await admin.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`)
  await admin.end()
  const url = new URL(opts.server)
  url.pathname = `/${name}`
  const dbUrl = url.toString()
  const bench = (args) => pgbench({ binary: opts.pgbench, url: dbUrl, schema: 'public', args })
  const run = ['-n', '-c', String(opts.clients), '-j', '2', '-T', String(opts.seconds)]
  let mv
  let failed = false
  try {
    log(`database ${name}: pgbench -i -s ${opts.scale}`)
    await bench(['-i', '-q', '-s', String(opts.scale)])

    log(`pgbench without views: ${run.join(' ')}`)
    const without = await bench(run)
    log(`  ${without.toFixed(0)} tps`)

    log('creating and backfilling the views')
    mv = await Matview.open({ database: dbUrl, views: soakViews() })
    const created = await mv.update()
    for (const v of created.views) {
      if (v.outcome !== 'done') throw new Error(`creating ${v.view} failed: ${v.error}`)
    }

    log('pgbench with the views, a matview worker keeping them fresh')
    const worker = await startWorker(dbUrl)
    const sampler = sampleLag(mv)
    const withViews = await bench(run)
    const lag = await sampler.stop()
    const runs = await runsDuring(mv, worker.started)
    log(`  ${withViews.toFixed(0)} tps; ${runs.runs} worker runs, max lag ${lag.max.toFixed(1)} s`)

    log('writers stopped: the worker stops; every view is drained and compared with its query')
    await worker.stop()
    const drained = await mv.update()
    const checks = []
    for (const view of soakViews()) {
      const diff = await queryDifferences(
        mv.database.db,
        view.name,
        view.query,
        SOAK_COLUMNS[view.name],
      )
      const result = drained.views.find((v) => v.view === view.name)
      const equal = diff.extra.length === 0 && diff.missing.length === 0
      if (!equal || result?.outcome !== 'done') failed = true
      checks.push({
        view: view.name,
        equal,
        extra: diff.extra.length,
        missing: diff.missing.length,
      })
    }
    const report = {
      scale: opts.scale,
      clients: opts.clients,
      seconds: opts.seconds,
      tpsWithout: without,
      tpsWith: withViews,
      ratio: withViews / without,
      updates: runs.runs,
      failedUpdates: runs.failed,
      lag,
      rows: runs.rows,
      workerExit: worker.exitCode,
      checks,
    }
    if (runs.failed > 0 || worker.exitCode !== 0) failed = true
    if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`)
    else process.stdout.write(`${text(report)}\n`)
    if (opts.write) {
      await writeResults(opts.out, 'soak-postgres', section(report))
      log(`wrote ${opts.out}`)
    }
  } finally {
    await mv?.close().catch(() => {})
    if (!opts.keep) {
      const cleanup = new pg.Client({ connectionString: opts.server })
      await cleanup.connect()
      await cleanup.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`)
      await cleanup.end()
    }
  }
  if (failed) process.exitCode = 1
}

/** `matview worker` on the soak database with the soak views. */
async function startWorker(dbUrl) {
  const views = pathToFileURL(fileURLToPath(new URL('./views.mjs', import.meta.url))).href
  const worker = await startWorkerProcess(
    `import { soakViews } from ${JSON.stringify(views)}\nexport default { database: ${JSON.stringify(dbUrl)}, views: soakViews() }\n`,
    ['--poll', '2s'],
  )
  const handle = {
    started: worker.started,
    exitCode: undefined,
    async stop() {
      handle.exitCode = await worker.stop()
    },
  }
  return handle
}

/** Samples the largest lag (age of the oldest pending change, from `status`) once a second. */
function sampleLag(mv) {
  let running = true
  const lags = []
  const loop = (async () => {
    while (running) {
      await new Promise((resolve) => setTimeout(resolve, 1000))
      const status = await mv.status()
      lags.push(Math.max(0, ...status.map((s) => s.pending?.lagSeconds ?? 0)))
    }
  })()
  return {
    async stop() {
      running = false
      await loop
      const sorted = [...lags].sort((a, b) => a - b)
      return { max: sorted.at(-1) ?? 0, median: sorted[Math.floor(sorted.length / 2)] ?? 0 }
    },
  }
}

/** The worker's runs since it started, from the run history. */
async function runsDuring(mv, since) {
  const { rows } = await sql`
    SELECT count(*)::int AS runs, count(*) FILTER (WHERE outcome = 'failed')::int AS failed,
           coalesce(sum(rows_inserted + rows_updated + rows_deleted), 0)::int8 AS rows
    FROM matview.runs WHERE started_at >= ${since}`.execute(mv.database.db)
  return { runs: rows[0].runs, failed: rows[0].failed, rows: Number(rows[0].rows) }
}

function text(r) {
  return [
    `pgbench TPC-B-like, scale ${r.scale}, ${r.clients} clients, ${r.seconds} s per side`,
    `  tps without views ${r.tpsWithout.toFixed(0)}, with views ${r.tpsWith.toFixed(0)} (${r.ratio.toFixed(2)} of it)`,
    `  ${r.updates} worker runs during the run (${r.failedUpdates} failed), ${r.rows} rows applied; the worker exited ${r.workerExit}`,
    `  lag during the run: median ${r.lag.median.toFixed(1)} s, max ${r.lag.max.toFixed(1)} s`,
    ...r.checks.map(
      (c) =>
        `  ${c.view}: ${c.equal ? 'equals its query' : `DIFFERS from its query (${c.extra} extra, ${c.missing} missing rows)`}`,
    ),
  ].join('\n')
}

function section(r) {
  const args = process.argv.slice(2)
  return [
    '## Soak: pgbench TPC-B-like with views kept fresh',
    '',
    `- Command: \`npm run soak${args.length ? ` -- ${args.join(' ')}` : ''}\``,
    `- Date: ${new Date().toISOString()}; machine: ${os.cpus().length} cores, load average ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' / ')} at the end`,
    `- Views: ${soakViews()
      .map((v) => v.name)
      .join(
        ', ',
      )} (soak/views.mjs), kept fresh by one \`matview worker\` process (on change, the default)`,
    '',
    '```text',
    text(r),
    '```',
    '',
    'The two pgbench runs share the 2 cores with the worker: the ratio is the whole cost of keeping the views fresh on this machine, trigger and apply together.',
  ].join('\n')
}

main().catch((error) => {
  process.stderr.write(`soak failed: ${error?.stack ?? error}\n`)
  process.exitCode = 1
})
