import { createServer, type Server } from 'node:http'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import { runnerFor } from '../runner/runners.js'
import type { ViewResult } from '../runner/update.js'
import { selectViews } from '../runner/update.js'
import { databaseReachable, type WorkerState } from './worker.js'

/**
 * The worker's Prometheus metrics (prom-client). Run results are counted as they come; pending
 * keys and lag are read from the database when scraped, so they are exact, never stale.
 */
export class WorkerMetrics {
  readonly registry = new Registry()
  private readonly rows: Counter<'view' | 'kind'>
  private readonly batchSeconds: Histogram<'view'>
  private readonly failures: Counter<'view'>
  private readonly lastSuccess: Gauge<'view'>

  constructor(database: Database, config: ResolvedConfig, views?: string[]) {
    const registerers = [this.registry]
    new Gauge({
      name: 'matview_worker_up',
      help: '1 while the worker runs',
      registers: registerers,
    }).set(1)
    this.rows = new Counter({
      name: 'matview_rows_applied_total',
      help: 'Target rows written by the worker, by view and kind (inserted, updated, deleted)',
      labelNames: ['view', 'kind'],
      registers: registerers,
    })
    this.batchSeconds = new Histogram({
      name: 'matview_batch_duration_seconds',
      help: 'Time per batch that committed (apply batches and hand-written batches)',
      labelNames: ['view'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: registerers,
    })
    this.failures = new Counter({
      name: 'matview_view_failures_total',
      help: 'Runs of a view that failed',
      labelNames: ['view'],
      registers: registerers,
    })
    this.lastSuccess = new Gauge({
      name: 'matview_view_last_success_timestamp_seconds',
      help: 'When a run of the view last succeeded (Unix time)',
      labelNames: ['view'],
      registers: registerers,
    })
    const selected = selectViews(config.views, views)
    // One read of the pending work per scrape serves both gauges.
    let reading: Promise<Map<string, { keys: number; lag: number | null }>> | undefined
    const readPending = () => {
      reading ??= (async () => {
        const found = new Map<string, { keys: number; lag: number | null }>()
        for (const view of selected) {
          try {
            const work = await runnerFor(view.kind).pending(
              view,
              database.db,
              config.schema,
              config.batchSize,
            )
            found.set(view.name, { keys: work.total, lag: work.lagSeconds ?? null })
          } catch {
            // A view that cannot be read (not created, needs a rebuild) has no sample.
          }
        }
        return found
      })().finally(() => setTimeout(() => (reading = undefined), 0))
      return reading
    }
    new Gauge({
      name: 'matview_view_pending_keys',
      help: 'Keys (declarative) or rows (hand-written) waiting to be applied',
      labelNames: ['view'],
      registers: registerers,
      async collect() {
        this.reset()
        for (const [view, work] of await readPending()) this.set({ view }, work.keys)
      },
    })
    new Gauge({
      name: 'matview_view_lag_seconds',
      help: 'Age of the oldest change not yet applied (0 when none is pending)',
      labelNames: ['view'],
      registers: registerers,
      async collect() {
        this.reset()
        for (const [view, work] of await readPending())
          if (view && work.lag !== undefined) this.set({ view }, work.lag ?? 0)
      },
    })
    for (const view of selected) {
      this.rows.inc({ view: view.name, kind: 'inserted' }, 0)
      this.failures.inc({ view: view.name }, 0)
    }
  }

  /** Times one batch (each apply batch, backfill range or hand-written batch that committed). */
  observeBatch(view: string, ms: number): void {
    this.batchSeconds.observe({ view }, ms / 1000)
  }

  /** Counts one view's run. */
  observe(result: ViewResult): void {
    if (result.outcome === 'failed') {
      this.failures.inc({ view: result.view })
      return
    }
    for (const kind of ['inserted', 'updated', 'deleted'] as const)
      if (result[kind] > 0) this.rows.inc({ view: result.view, kind }, result[kind])
    if (result.outcome === 'done') this.lastSuccess.set({ view: result.view }, Date.now() / 1000)
  }
}

/**
 * Serves `/metrics` (Prometheus text) and `/healthz`: 200 when the database answers and the
 * worker's loop went round recently, 503 otherwise, with the reasons as JSON.
 */
export async function serveMetrics(
  port: number,
  metrics: WorkerMetrics,
  database: Database,
  state: () => WorkerState | undefined,
): Promise<Server> {
  const server = createServer((request, response) => {
    void (async () => {
      const path = (request.url ?? '/').split('?')[0]
      if (path === '/metrics') {
        const body = await metrics.registry.metrics()
        response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body)
      } else if (path === '/healthz') {
        const current = state()
        const database_ = await databaseReachable(database)
        // The loop wakes at least once per poll; three polls without a turn means it is stuck.
        const loop =
          current !== undefined &&
          Date.now() - current.lastTick < Math.max(3 * current.pollMs, 15_000)
        const body = {
          ok: database_ && loop,
          database: database_,
          loop,
          running: current?.running() ?? [],
          failing: current?.failing() ?? [],
        }
        response
          .writeHead(body.ok ? 200 : 503, { 'content-type': 'application/json' })
          .end(JSON.stringify(body))
      } else {
        response
          .writeHead(404, { 'content-type': 'text/plain' })
          .end('not found: try /metrics or /healthz\n')
      }
    })().catch((error) => {
      response.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(error)}\n`)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, () => resolve())
  })
  return server
}
