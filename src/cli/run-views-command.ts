import type { Matview } from '../matview.js'
import { createConsoleLogger, type Logger } from '../runner/logger.js'
import type { ProgressEvent, UpdateSummary } from '../runner/update.js'
import { EXIT } from './exit-codes.js'
import { withMatview } from './open-matview.js'
import type { GlobalOptions } from './options.js'
import { formatSummary } from './output/format.js'
import { createProgressReporter } from './output/progress.js'
import { handleShutdownSignals } from './signals.js'

/** What a command that works through views hands to the library call it makes. */
export interface RunHooks {
  signal: AbortSignal
  logger: Logger
  onProgress: (event: ProgressEvent) => void
}

/**
 * The frame of `update`, `create` and `rebuild`: progress bars on a terminal, signals that stop
 * after the current batch, the summary (or `--json`), and the exit code.
 */
export async function runViewsCommand(
  flags: GlobalOptions & { json?: boolean },
  run: (mv: Matview, hooks: RunHooks) => Promise<UpdateSummary>,
  options: { whenEmpty?: string; views?: string[] } = {},
): Promise<void> {
  const reporter = createProgressReporter({
    live: !flags.json && process.stderr.isTTY === true,
    write: (line) => !flags.json && console.log(line),
  })
  const logger = createConsoleLogger({ verbose: flags.verbose === true })
  const shutdown = handleShutdownSignals((signal) =>
    logger.warn(`${signal}: stopping after the current batch (send it again to exit at once)`),
  )
  try {
    const summary = await withMatview(
      flags,
      (mv) =>
        run(mv, {
          signal: shutdown.signal,
          logger,
          onProgress: (event) => reporter.onProgress(event),
        }),
      options.views,
    )
    const failed = summary.views.some((v) => v.outcome === 'failed')
    if (flags.json) {
      const views = summary.views.map(({ cause: _cause, ...view }) => view)
      console.log(JSON.stringify({ durationMs: summary.durationMs, ok: !failed, views }, null, 2))
    } else if (summary.views.length === 0 && options.whenEmpty) {
      console.log(options.whenEmpty)
    } else {
      console.log(formatSummary(summary))
    }
    process.exitCode = shutdown.exitCode() ?? (failed ? EXIT.viewFailed : EXIT.ok)
  } finally {
    reporter.stop()
    shutdown.dispose()
  }
}
