import type { Command } from 'commander'
import { type GlobalOptions, parseDurationFlag, parsePositiveInt } from '../options.js'
import { runViewsCommand } from '../run-views-command.js'

interface RebuildFlags extends GlobalOptions {
  allChanged?: boolean
  batchSize?: number
  maxTime?: number
  lockTimeout?: number
  json?: boolean
}

export function registerRebuild(program: Command): void {
  program
    .command('rebuild')
    .description(
      'rebuild declarative views from their definitions while readers keep reading (after a definition change or a TRUNCATE)',
    )
    .argument('[names...]', 'the views to rebuild (declarative views of the config)')
    .option(
      '--all-changed',
      'also every declarative view whose definition changed, or that needs or is in a rebuild',
    )
    .option(
      '--batch-size <n>',
      'keys per batch when applying the changes made meanwhile (default: the config)',
      parsePositiveInt('--batch-size'),
    )
    .option(
      '--max-time <duration>',
      'stop after this long, e.g. 10m; the next rebuild resumes where it stopped',
      parseDurationFlag('--max-time'),
    )
    .option(
      '--lock-timeout <duration>',
      'longest wait for a lock during the swap before it is tried again, 5 times (default 3s)',
      parseDurationFlag('--lock-timeout'),
    )
    .option('--json', 'print a machine-readable summary on stdout')
    .addHelpText(
      'after',
      `
The view's table keeps serving its rows while a new table is filled in key ranges (one short
transaction each) and a new change log collects the writes made meanwhile. Then one short
transaction applies what is left, swaps the new table in under the old name (indexes, owner,
grants and comments carried over, the old table dropped) and records the new definition.
Views that read the table get the rows that changed. A rebuild that stops (--max-time, a
signal, a crash) is resumed by the next one, or started over if the definition changed again;
until then the view is 'rebuilding' and update leaves it alone.

Exit codes: 0 done (or stopped by --max-time, to be resumed), 1 a view failed, 2 usage or config
error (unknown, hand-written or never created view), 130/143 interrupted.

Examples:
  $ matview rebuild customer_totals
  $ matview rebuild --all-changed --max-time 30m`,
    )
    .action(async (names: string[], _flags: RebuildFlags, command: Command) => {
      const flags = command.optsWithGlobals<RebuildFlags>()
      await runViewsCommand(
        flags,
        (mv, hooks) =>
          mv.rebuild(names, {
            allChanged: flags.allChanged === true,
            ...(flags.batchSize !== undefined ? { batchSize: flags.batchSize } : {}),
            ...(flags.maxTime !== undefined ? { maxTime: flags.maxTime } : {}),
            ...(flags.lockTimeout !== undefined ? { lockTimeout: flags.lockTimeout } : {}),
            ...hooks,
          }),
        {
          whenEmpty: 'nothing to rebuild: every declarative view is ready on its definition',
          views: names,
        },
      )
    })
}
