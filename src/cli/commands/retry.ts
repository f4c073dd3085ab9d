import type { Command } from 'commander'
import { withMatview } from '../open-matview.js'
import type { GlobalOptions } from '../options.js'
import { formatCount } from '../output/format.js'

export function registerRetry(program: Command): void {
  program
    .command('retry')
    .description(
      'put the keys the worker set aside (they failed alone) back in the change log, after fixing their data',
    )
    .argument('<names...>', 'declarative views')
    .addHelpText(
      'after',
      `
The next update or worker run applies them; a key that still fails fails the view again (and the
worker sets it aside again after repeated failures). "matview status" shows how many keys each
view has set aside.`,
    )
    .action(async (names: string[], _flags: GlobalOptions, command: Command) => {
      const flags = command.optsWithGlobals<GlobalOptions>()
      const results = await withMatview(flags, (mv) => mv.retry(names))
      for (const r of results)
        console.log(
          `${r.view}: ${r.keys === 0 ? 'no keys set aside' : `${formatCount(r.keys)} key${r.keys === 1 ? '' : 's'} back in the change log`}`,
        )
    })
}
