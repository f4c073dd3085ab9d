import type { Command } from 'commander'
import { withMatview } from '../open-matview.js'
import type { GlobalOptions } from '../options.js'

interface DropFlags extends GlobalOptions {
  keepTable?: boolean
}

export function registerDrop(program: Command): void {
  program
    .command('drop')
    .description('remove views: capture triggers, change log, catalog rows, and the target table')
    .argument('<names...>', 'the views to drop (from the catalog: they need not be in the config)')
    .option('--keep-table', 'keep the target table (and its rows) as a plain table')
    .addHelpText(
      'after',
      `
Each view is dropped in one transaction under its lock. A view another view reads is refused
(drop the reader first). A hand-written view only loses its catalog row: its table is yours.
Exit codes: 0 dropped, 2 unknown view, a view still read by another, or held by a runner.`,
    )
    .action(async (names: string[], _flags: DropFlags, command: Command) => {
      const flags = command.optsWithGlobals<DropFlags>()
      await withMatview(flags, async (mv) => {
        for (const name of names) {
          const [result] = await mv.drop([name], { keepTable: flags.keepTable === true })
          console.log(
            `${name}: dropped${result!.droppedTable ? ', with its table' : ', table kept'}`,
          )
        }
      })
    })
}
