// g. Change-driven latency: a `matview worker` process keeps customer_totals fresh; each sample
// commits one new paid order and times until the customer's total in the view shows it.
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ms } from './format.mjs'
import { median } from './measure.mjs'

const SAMPLES = 20
const TIMEOUT_MS = 30_000

export async function latencyPhase(ctx) {
  const { env, results, size, log } = ctx
  if (env.dialect !== 'postgres') {
    results.note(
      'Change-driven latency needs a worker process beside the benchmark: PostgreSQL only.',
    )
    return
  }
  const worker = await startWorker(env.url)
  try {
    // The worker's first run of every view, then its quiet state.
    await waitFor(
      async () => (await env.exec('SELECT count(*)::int AS n FROM matview.workers')).rows[0].n > 0,
    )
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const samples = []
    for (let i = 0; i < SAMPLES; i++) {
      const customer = 1 + Math.floor(ctx.random() * size.customers)
      const before = await total(env, customer)
      const amount = 1000 + i
      await env.exec(
        `INSERT INTO orders (customer_id, amount_cents, status) VALUES ($1, $2, 'paid')`,
        [customer, amount],
      )
      const committed = performance.now()
      await waitFor(async () => (await total(env, customer)) === before + amount, 5)
      samples.push(performance.now() - committed)
      await new Promise((resolve) => setTimeout(resolve, 100 + Math.floor(ctx.random() * 400)))
    }
    const sorted = [...samples].sort((a, b) => a - b)
    const p95 = sorted[Math.ceil(0.95 * sorted.length) - 1]
    log(`write to visible: median ${ms(median(samples))}, p95 ${ms(p95)}, max ${ms(sorted.at(-1))}`)
    results.add({
      group: 'latency',
      name: `write to visible in the view, one \`matview worker\` on change (default debounce 250 ms; median of ${SAMPLES} single-row INSERTs, p95 ${ms(p95)})`,
      matview: ms(median(samples)),
      baseline: '',
      ratio: undefined,
      target: { text: 'about a second (issue 5)', met: median(samples) <= 1000 },
    })
  } finally {
    await worker.stop()
  }
}

async function total(env, customer) {
  const { rows } = await env.exec(
    'SELECT total_cents::int8 AS t FROM customer_totals WHERE customer_id = $1',
    [customer],
  )
  return rows.length === 0 ? 0 : Number(rows[0].t)
}

async function waitFor(check, pauseMs = 50) {
  const started = performance.now()
  while (performance.now() - started < TIMEOUT_MS) {
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, pauseMs))
  }
  throw new Error(`latency: not visible within ${TIMEOUT_MS} ms`)
}

/** `matview worker` (the built bin) on the benchmark database, with the benchmark's view. */
async function startWorker(url) {
  const dir = await mkdtemp(join(tmpdir(), 'matview-bench-worker-'))
  const workload = pathToFileURL(fileURLToPath(new URL('./workload.mjs', import.meta.url))).href
  await writeFile(
    join(dir, 'matview.config.mjs'),
    `import { customerTotalsView } from ${JSON.stringify(workload)}\nexport default { database: ${JSON.stringify(url)}, views: [customerTotalsView()] }\n`,
  )
  const bin = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))
  const child = spawn(process.execPath, [bin, 'worker'], {
    cwd: dir,
    env: { ...process.env, DATABASE_URL: '', MATVIEW_DATABASE_URL: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)))
  return {
    async stop() {
      child.kill('SIGTERM')
      const code = await exited
      await rm(dir, { recursive: true, force: true })
      if (code !== 0) throw new Error(`the worker exited ${code}:\n${stderr}`)
    },
  }
}
