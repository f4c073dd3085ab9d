// g. Partitions: one large view whose change log is split into 4 hash partitions, drained by 1,
// 2, 3 and 4 concurrent `matview update` processes (the built bin), each applying the
// partitions no other process holds. How the apply throughput of one view grows with processes.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ident, sqlText } from './env.mjs'
import { count, ms, ratio } from './format.mjs'
import { burst, customerTotalsQuery } from './workload.mjs'

const VIEW = 'customer_totals_p4'
const PARTITIONS = 4
const PROCESSES = [1, 2, 3, 4]
const BIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))
const PACKAGE = pathToFileURL(fileURLToPath(new URL('../../dist/index.js', import.meta.url))).href

/** A config file for the processes: the view over the bench's tables, on the bench's database. */
function writeConfig(dir, url, batchSize) {
  writeFileSync(
    join(dir, 'matview.config.mjs'),
    `import { defineView, sql } from ${JSON.stringify(PACKAGE)}
export default {
  database: ${JSON.stringify(url)},
  batchSize: ${batchSize},
  views: [
    defineView({
      name: ${JSON.stringify(VIEW)},
      key: ['customer_id'],
      query: sql.raw(${JSON.stringify(sqlText(customerTotalsQuery))}),
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
      partitions: ${PARTITIONS},
    }),
  ],
}
`,
  )
}

/** `matview update` in `dir`; rejects unless it exits 0. */
function update(dir, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'update', ...args], {
      cwd: dir,
      env: { ...process.env, DATABASE_URL: '', MATVIEW_DATABASE_URL: '' },
    })
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
    })
    child.stderr.on('data', (chunk) => {
      out += chunk
    })
    child.on('error', reject)
    child.on('exit', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`matview update exited ${code}: ${out}`)),
    )
  })
}

async function pendingKeys(env, id) {
  const { rows } = await env.exec(
    `SELECT count(DISTINCT customer_id)::int AS keys FROM (
       SELECT customer_id FROM ${ident('matview', `log_${id}`)}
       UNION ALL SELECT unnest(customer_id) FROM ${ident('matview', `inbox_${id}`)}) AS w`,
  )
  return rows[0].keys
}

export async function partitionsPhase(ctx) {
  const { env, plan, results, size, log } = ctx
  if (env.dialect !== 'postgres') {
    results.note(
      'partitions: skipped on PGlite (one process owns its database; several processes need PostgreSQL).',
    )
    return
  }
  const dir = mkdtempSync(join(tmpdir(), 'matview-bench-partitions-'))
  try {
    writeConfig(dir, env.url, plan.batchSize)
    log(`creating ${VIEW} (partitions: ${PARTITIONS})`)
    await update(dir, [])
    const { rows } = await env.exec('SELECT id FROM matview.views WHERE name = $1', [VIEW])
    const id = rows[0].id
    const runs = []
    for (const processes of PROCESSES) {
      await burst(env, plan.burstStatements, size.customers)
      await env.exec(
        `VACUUM ANALYZE ${ident('matview', `log_${id}`)}, ${ident('matview', `inbox_${id}`)}`,
      )
      const keys = await pendingKeys(env, id)
      const { rows: last } = await env.exec(
        'SELECT coalesce(max(id), 0)::int AS id FROM matview.runs',
      )
      const started = performance.now()
      await Promise.all(
        Array.from({ length: processes }, () =>
          update(dir, ['--strategy', 'incremental', '--views', VIEW]),
        ),
      )
      const took = performance.now() - started
      const left = await pendingKeys(env, id)
      if (left !== 0) throw new Error(`${left} keys still pending after the drain`)
      // From the first partition taken to the last let go, by the database's clock: the drain
      // without the processes' start (Node, config, connection), which takes longer the more
      // processes start at once on a small machine.
      const { rows: span } = await env.exec(
        `SELECT extract(epoch FROM max(p.finished_at) - min(p.started_at))::float8 * 1000 AS ms,
                count(DISTINCT r.pid)::int AS pids, count(*)::int AS slices
         FROM matview.run_partitions p JOIN matview.runs r ON r.id = p.run_id WHERE r.id > $1`,
        [last[0].id],
      )
      const applying = Number(span[0].ms)
      runs.push({ processes, keys, ms: took, applying, pids: span[0].pids })
      log(
        `${processes} process${processes > 1 ? 'es' : ''}: ${count(keys)} keys in ${ms(took)} (${count(Math.round(keys / (took / 1000)))} keys/s), applying ${ms(applying)} (${count(Math.round(keys / (applying / 1000)))} keys/s; ${span[0].slices} slices by ${span[0].pids} processes)`,
      )
    }
    const one = runs[0]
    const rate = (run, time) => run.keys / (time / 1000)
    for (const run of runs) {
      const wall = rate(run, run.ms) / rate(one, one.ms)
      const applying = rate(run, run.applying) / rate(one, one.applying)
      results.add({
        group: 'partitions',
        name: `drain ${count(run.keys)} keys of one view (partitions: ${PARTITIONS}, batchSize ${count(plan.batchSize)}) with ${run.processes} update process${run.processes > 1 ? 'es' : ''} (${run.pids} applied)`,
        matview: `${ms(run.ms)} (${ms(run.applying)} applying)`,
        baseline: `${count(Math.round(rate(run, run.ms)))} keys/s (${count(Math.round(rate(run, run.applying)))} applying)`,
        ratio: wall,
        ratioText: `${ratio(wall)} (${ratio(applying)} applying) the keys/s of 1 process`,
      })
    }
    // The run history: no partition applied by two processes at overlapping times.
    const { rows: overlap } = await env.exec(
      `SELECT count(*)::int AS n FROM matview.run_partitions a JOIN matview.run_partitions b
         ON a.partition = b.partition AND a.run_id < b.run_id
        AND a.started_at < b.finished_at AND b.started_at < a.finished_at`,
    )
    const target = ident(VIEW)
    const query = sqlText(customerTotalsQuery)
    const { rows: diff } = await env.exec(
      `SELECT (SELECT count(*) FROM (TABLE ${target} EXCEPT (${query})) AS a)::int
            + (SELECT count(*) FROM ((${query}) EXCEPT TABLE ${target}) AS b)::int AS n`,
    )
    const ok = overlap[0].n === 0 && diff[0].n === 0
    results.note(
      ok
        ? `Check: after each drain ${VIEW} equals its query, and the run history shows no partition applied by two processes at once. partitions: each time is from starting the processes to the last one's exit; "applying" is from the first partition taken to the last one let go (run_partitions, the database's clock), without the processes' start.`
        : `CHECK FAILED: ${overlap[0].n} overlapping partition runs, ${diff[0].n} rows differ from the query.`,
    )
    if (!ok) results.failed = true
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
