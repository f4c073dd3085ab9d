import type { Command } from 'commander'
import { collectList, parseDurationFlag, parsePositiveInt } from '../options.js'
import { executeUpdate, type UpdateFlags } from './update.js'

export function registerCreate(program: Command): void {
  program
    .command('create')
    .description(
      'create and backfill the declarative views that do not exist yet (update does this too)',
    )
    .option(
      '--views <names>',
      'only these views (comma-separated, or repeat the flag)',
      collectList,
    )
    .option(
      '--batch-size <n>',
      'keys per backfill page when no source column bounds the key (default: the config)',
      parsePositiveInt('--batch-size'),
    )
    .option(
      '--max-time <duration>',
      'stop after this long; the backfill resumes from its checkpoint next time',
      parseDurationFlag('--max-time'),
    )
    .option('--json', 'print a machine-readable summary on stdout')
    .addHelpText(
      'after',
      `
Creates, in one transaction per view: the target table (columns and types from the query,
primary key on the key, the declared indexes), the change log, the capture triggers on every
source and the catalog row. Then fills the target in key-range batches, one transaction each.
Views that exist are left as they are; hand-written views are not touched.

Exit codes: 0 done, 1 a view failed (bad definition: nothing of it is left behind),
2 usage or config error, 130/143 interrupted (the backfill resumes next time).`,
    )
    .action(async (_flags: UpdateFlags, command: Command) => {
      await executeUpdate(command.optsWithGlobals<UpdateFlags>(), { createOnly: true })
    })
}
