import { type Command, Option } from 'commander'
import { STRATEGIES, type Strategy } from '../../engine/choose-strategy.js'
import { collectList, type GlobalOptions, parseDurationFlag, parsePositiveInt } from '../options.js'
import { runViewsCommand } from '../run-views-command.js'

export interface UpdateFlags extends GlobalOptions {
  views?: string[]
  models?: string[]
  batchSize?: number
  maxTime?: number
  maxBatches?: number
  dryRun?: boolean
  wait?: boolean
  json?: boolean
  strategy?: Strategy
}

export function registerUpdate(program: Command): void {
  program
    .command('update')
    .description('apply what changed to every view (or the named ones), in small batches')
    .option(
      '--views <names>',
      'only these views (comma-separated, or repeat the flag)',
      collectList,
    )
    .option('--models <names>', 'another name for --views, as in the Django package', collectList)
    .option(
      '--batch-size <n>',
      'rows or keys per batch (default: the config, else 1000)',
      parsePositiveInt('--batch-size'),
    )
    .option(
      '--max-time <duration>',
      'stop starting new batches after this long, e.g. 30s, 5m',
      parseDurationFlag('--max-time'),
    )
    .option(
      '--max-batches <n>',
      'at most this many batches per view',
      parsePositiveInt('--max-batches', Number.MAX_SAFE_INTEGER),
    )
    .addOption(
      new Option(
        '--strategy <strategy>',
        'how declarative views apply pending keys: in batches, by a rebuild with swap, or whichever costs less (default: the config, else auto)',
      ).choices(STRATEGIES),
    )
    .option('--dry-run', 'print what each view needs, write nothing')
    .option('--wait', 'wait for views another runner holds instead of skipping them')
    .option('--json', 'print a machine-readable summary on stdout')
    .addHelpText(
      'after',
      `
Exit codes: 0 done (or stopped by --max-time/--max-batches with work left), 1 a view failed,
2 usage or config error, 130/143 interrupted by SIGINT/SIGTERM.

Examples:
  $ matview update                           every view, until nothing is pending
  $ matview update --views customer_totals --max-time 30s
  $ matview update --dry-run                 what would be applied
  $ matview update --strategy incremental    never rebuild, even after a mass update`,
    )
    .action(async (_flags: UpdateFlags, command: Command) => {
      await executeUpdate(command.optsWithGlobals<UpdateFlags>())
    })
}

/** Runs `update` (or `create`, which is update without applying) and sets the exit code. */
export async function executeUpdate(
  flags: UpdateFlags,
  mode: { createOnly?: boolean } = {},
): Promise<void> {
  const views = [...(flags.views ?? []), ...(flags.models ?? [])]
  await runViewsCommand(
    flags,
    (mv, hooks) =>
      mv.update({
        ...(views.length > 0 ? { views } : {}),
        ...(flags.batchSize !== undefined ? { batchSize: flags.batchSize } : {}),
        ...(flags.maxTime !== undefined ? { maxTime: flags.maxTime } : {}),
        ...(flags.maxBatches !== undefined ? { maxBatches: flags.maxBatches } : {}),
        ...(flags.strategy !== undefined ? { strategy: flags.strategy } : {}),
        dryRun: flags.dryRun === true,
        createOnly: mode.createOnly === true,
        wait: flags.wait === true,
        ...hooks,
      }),
    { views },
  )
}
