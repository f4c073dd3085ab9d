// g. Change-driven latency: a `matview worker` process keeps customer_totals fresh; each sample
// commits one new paid order and times until the customer's total in the view shows it.
import { fileURLToPath, pathToFileURL } from 'node:url'
import { ms } from './format.mjs'
import { median } from './measure.mjs'
import { startWorkerProcess } from './worker-process.mjs'

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

/** `matview worker` on the benchmark database, with the benchmark's view. */
async function startWorker(url) {
  const workload = pathToFileURL(fileURLToPath(new URL('./workload.mjs', import.meta.url))).href
  const worker = await startWorkerProcess(
    `import { customerTotalsView } from ${JSON.stringify(workload)}\nexport default { database: ${JSON.stringify(url)}, views: [customerTotalsView()] }\n`,
  )
  return {
    async stop() {
      const code = await worker.stop()
      if (code !== 0) throw new Error(`the worker exited ${code}`)
    },
  }
}
