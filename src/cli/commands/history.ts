import type { Command } from 'commander'
import { formatDuration } from '../../config/duration.js'
import { explainEmbeddedInUse } from '../embedded-in-use.js'
import { withMatview } from '../open-matview.js'
import { type GlobalOptions, parsePositiveInt } from '../options.js'
import { formatRows, isIdleRun } from '../output/format.js'
import { formatTable } from '../output/table.js'

interface HistoryFlags extends GlobalOptions {
  limit: number
  json?: boolean
}

export function registerHistory(program: Command): void {
  program
    .command('history')
    .description("a view's runs, newest first: when, how long, outcome, rows, error")
    .argument('<name>', 'the view')
    .option('--limit <n>', 'how many runs', parsePositiveInt('--limit'), 20)
    .option('--json', 'print JSON on stdout')
    .action(async (name: string, _flags: HistoryFlags, command: Command) => {
      const flags = command.optsWithGlobals<HistoryFlags>()
      const runs = await withMatview(flags, (mv) => mv.history(name, flags.limit)).catch(
        (error: unknown) => {
          throw explainEmbeddedInUse(error, 'history')
        },
      )
      if (flags.json) {
        console.log(JSON.stringify(runs, null, 2))
        return
      }
      if (runs.length === 0) {
        console.log(`${name}: no runs recorded`)
        return
      }
      console.log(
        formatTable(
          ['STARTED', 'TOOK', 'OUTCOME', 'ROWS', 'HOST', 'ERROR'],
          runs.map((r) => [
            r.startedAt.toISOString(),
            r.finishedAt
              ? formatDuration(r.finishedAt.getTime() - r.startedAt.getTime())
              : 'running',
            r.outcome,
            isIdleRun(r) ? 'nothing to do' : formatRows(r),
            r.host ? `${r.host}:${r.pid}` : '-',
            r.error ?? '',
          ]),
        ),
      )
    })
}
