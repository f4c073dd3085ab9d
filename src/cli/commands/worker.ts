import type { Command } from 'commander'
import { InvalidArgumentError } from 'commander'
import { createJsonLogger } from '../../runner/json-logger.js'
import { createConsoleLogger } from '../../runner/logger.js'
import { serveMetrics, WorkerMetrics } from '../../worker/metrics.js'
import type { WorkerState } from '../../worker/worker.js'
import { EXIT } from '../exit-codes.js'
import { withMatview } from '../open-matview.js'
import { collectList, type GlobalOptions, parseDurationFlag, parsePositiveInt } from '../options.js'
import { handleShutdownSignals } from '../signals.js'

interface WorkerFlags extends GlobalOptions {
  views?: string[]
  concurrency?: number
  poll?: number
  grace?: number
  batchSize?: number
  metricsPort?: number
  logFormat?: 'text' | 'json'
}

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description(
      'keep views fresh until stopped: on change (default), on a schedule or at an interval',
    )
    .option(
      '--views <names>',
      'only these views (comma-separated, or repeat the flag)',
      collectList,
    )
    .option(
      '--concurrency <n>',
      'views run at once (default 1; PGlite: always 1)',
      parsePositiveInt('--concurrency', 64),
    )
    .option(
      '--poll <duration>',
      'check change-driven views for work this often, in case a notification was missed (default 5s)',
      parseDurationFlag('--poll'),
    )
    .option(
      '--grace <duration>',
      'on SIGTERM/SIGINT, wait this long for running batches to finish (default 30s)',
      parseDurationFlag('--grace'),
    )
    .option(
      '--batch-size <n>',
      'rows or keys per batch (default: the config, else 1000)',
      parsePositiveInt('--batch-size'),
    )
    .option(
      '--metrics-port <port>',
      'serve Prometheus /metrics and /healthz on this port',
      parsePositiveInt('--metrics-port', 65535),
    )
    .option('--log-format <format>', 'text (default) or json (one object per line)', (value) => {
      if (value !== 'text' && value !== 'json')
        throw new InvalidArgumentError(`--log-format must be text or json, got "${value}"`)
      return value
    })
    .addHelpText(
      'after',
      `
Each view says when it runs: schedule: '*/5 * * * *', every: '30s', or onChange: { debounce:
'500ms' } (the default). Several workers (here or on other machines) share the views: each view
runs under its lock. SIGTERM/SIGINT stop taking new batches and wait --grace for the running
ones; a second signal exits at once.

Exit codes: 0 stopped by a signal (or nothing to do), 2 usage or config error, 130/143 a second
signal or batches still running when --grace ran out.

Examples:
  $ matview worker
  $ matview worker --concurrency 4 --metrics-port 9464 --log-format json`,
    )
    .action(async (_flags: WorkerFlags, command: Command) => {
      const flags = command.optsWithGlobals<WorkerFlags>()
      const verbose = flags.verbose === true
      const logger =
        flags.logFormat === 'json'
          ? createJsonLogger({ verbose })
          : createConsoleLogger({ verbose })
      const shutdown = handleShutdownSignals((signal) =>
        logger.info(
          `${signal}: stopping after the current batches (send it again to exit at once)`,
        ),
      )
      try {
        // Set after withMatview: closing PGlite resets process.exitCode (its Emscripten exit).
        process.exitCode = await withMatview(flags, async (mv) => {
          let state: WorkerState | undefined
          const metrics =
            flags.metricsPort !== undefined
              ? new WorkerMetrics(mv.database, mv.config, flags.views)
              : undefined
          const server =
            metrics && flags.metricsPort !== undefined
              ? await serveMetrics(flags.metricsPort, metrics, mv.database, () => state)
              : undefined
          if (server) logger.info(`metrics on :${flags.metricsPort}/metrics, health on /healthz`)
          try {
            logger.info(
              `worker started (pid ${process.pid}) on ${mv.database.description}, ${
                flags.views?.join(', ') ?? `${mv.config.views.length} views`
              }`,
            )
            const summary = await mv.worker(
              {
                ...(flags.views ? { views: flags.views } : {}),
                ...(flags.concurrency !== undefined ? { concurrency: flags.concurrency } : {}),
                ...(flags.poll !== undefined ? { pollMs: flags.poll } : {}),
                ...(flags.grace !== undefined ? { graceMs: flags.grace } : {}),
                ...(flags.batchSize !== undefined ? { batchSize: flags.batchSize } : {}),
                signal: shutdown.signal,
                logger,
                onRun: (result) => metrics?.observe(result),
                onBatch: (view, ms) => metrics?.observeBatch(view, ms),
              },
              (s) => {
                state = s
              },
            )
            logger.info(`worker stopped: ${summary.runs} runs, ${summary.failures} failed`)
            if (summary.graceExceeded) {
              // A batch outlasted --grace and still holds its transaction (on PGlite, the
              // instance's lock, which closing would wait for): end here, as a second signal
              // does; the batch rolls back with the process and its keys stay pending.
              process.exit(shutdown.exitCode() ?? EXIT.sigterm)
            }
            return EXIT.ok
          } finally {
            server?.close()
            server?.closeAllConnections()
          }
        })
      } finally {
        shutdown.dispose()
      }
    })
}
