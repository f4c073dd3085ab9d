import type { Command } from 'commander'
import { formatDuration } from '../../config/duration.js'
import type { DriftKeys } from '../../engine/verify-view.js'
import type { VerifyResult } from '../../runner/verify.js'
import { EXIT } from '../exit-codes.js'
import { withMatview } from '../open-matview.js'
import { type GlobalOptions, parseDurationFlag, parsePositiveInt } from '../options.js'
import { formatCount, reasonBeside } from '../output/format.js'
import { createProgressReporter } from '../output/progress.js'
import { handleShutdownSignals } from '../signals.js'

interface VerifyFlags extends GlobalOptions {
  repair?: boolean
  sample: number
  batchSize?: number
  maxTime?: number
  json?: boolean
}

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description(
      "compare declarative views' tables with their queries: missing, extra and different keys",
    )
    .argument('[names...]', 'the views to verify (default: every declarative view of the config)')
    .option('--repair', 'put the drifted keys in the change log and apply them')
    .option('--sample <n>', 'drifted keys listed per kind', parsePositiveInt('--sample', 1000), 5)
    .option(
      '--batch-size <n>',
      'keys per repair batch (default: the config)',
      parsePositiveInt('--batch-size'),
    )
    .option(
      '--max-time <duration>',
      'stop after this long, e.g. 10m (what was not compared is reported partial)',
      parseDurationFlag('--max-time'),
    )
    .option('--json', 'print a machine-readable report on stdout')
    .addHelpText(
      'after',
      `
Each view is compared in ranges of its key, each one short read-only statement (about a
second): no huge query, no long lock, safe while writers write and update runs. Keys still
waiting in the change log are counted as pending, not as drift. Views that are not ready
(building, needs rebuild, rebuilding, or a changed definition) are reported, not verified.
--repair takes the view's lock, logs the drifted keys and applies them as update would.

Exit codes: 0 every view equal (or repaired), 3 drift found and not repaired, 1 a view failed or
could not be verified, 2 usage or config error, 130/143 interrupted.

Examples:
  $ matview verify                        every declarative view
  $ matview verify customer_totals --repair
  $ matview verify --json --max-time 10m`,
    )
    .action(async (names: string[], _flags: VerifyFlags, command: Command) => {
      const flags = command.optsWithGlobals<VerifyFlags>()
      const reporter = createProgressReporter({
        live: !flags.json && process.stderr.isTTY === true,
        write: () => {},
      })
      const shutdown = handleShutdownSignals(() =>
        process.stderr.write('stopping after the current key range\n'),
      )
      try {
        const summary = await withMatview(flags, (mv) =>
          mv.verify(names, {
            repair: flags.repair === true,
            sample: flags.sample,
            ...(flags.batchSize !== undefined ? { batchSize: flags.batchSize } : {}),
            ...(flags.maxTime !== undefined ? { maxTime: flags.maxTime } : {}),
            signal: shutdown.signal,
            onProgress: (event) => {
              if (event.type === 'end') {
                reporter.stop()
                if (!flags.json) console.log(formatVerifyResult(event.result))
              } else reporter.onProgress(event)
            },
          }),
        )
        const code = verifyExitCode(summary.views)
        if (flags.json) {
          const views = summary.views.map(({ cause: _cause, ...view }) => view)
          console.log(
            JSON.stringify(
              { durationMs: summary.durationMs, ok: code === EXIT.ok, views },
              null,
              2,
            ),
          )
        } else if (summary.views.length === 0) {
          console.log('nothing to verify: the config has no declarative views')
        }
        process.exitCode = shutdown.exitCode() ?? code
      } finally {
        reporter.stop()
        shutdown.dispose()
      }
    })
}

function verifyExitCode(results: VerifyResult[]): number {
  if (results.some((r) => r.outcome === 'failed' || r.outcome === 'not verified'))
    return EXIT.viewFailed
  if (results.some((r) => r.outcome === 'drift')) return EXIT.drift
  return EXIT.ok
}

/** `customer_totals: drift, 1 missing (customer_id=7), 2 different (…), 40 rows in 3 ranges, 12ms` */
export function formatVerifyResult(r: VerifyResult): string {
  const took = formatDuration(r.durationMs)
  if (r.outcome === 'failed') return `${r.view}: failed: ${r.error}`
  if (r.outcome === 'not verified') return `${r.view}: not verified: ${r.reason}`
  const why = reasonBeside(r.outcome, r.reason)
  const head = why.length > 0 ? `${r.outcome} (${why[0]})` : r.outcome
  if (r.rows === undefined) return `${r.view}: ${head}`
  const parts: string[] = []
  for (const kind of ['missing', 'extra', 'different'] as const) {
    const found = r[kind]
    if (found && found.count > 0) parts.push(`${formatCount(found.count)} ${kind} (${keys(found)})`)
  }
  if (r.repaired) parts.push(`${formatCount(r.repaired)} repaired`)
  if (r.pending) parts.push(`${formatCount(r.pending)} pending (the next update applies them)`)
  const ranges = `${formatCount(r.rows)} rows in ${formatCount(r.ranges ?? 0)} range${r.ranges === 1 ? '' : 's'}`
  return `${r.view}: ${[head, ...parts, ranges].join(', ')}, ${took}`
}

function keys(found: DriftKeys): string {
  const shown = found.first.map((key) =>
    Object.entries(key)
      .map(([k, v]) => `${k}=${v}`)
      .join(' '),
  )
  return found.count > shown.length ? `${shown.join('; ')}; …` : shown.join('; ')
}
