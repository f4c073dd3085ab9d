import type { Command } from 'commander'
import type { ViewStatus } from '../../runner/status.js'
import { withMatview } from '../open-matview.js'
import { collectList, type GlobalOptions } from '../options.js'
import { formatPending, formatRun } from '../output/format.js'
import { formatTable } from '../output/table.js'

interface StatusFlags extends GlobalOptions {
  views?: string[]
  json?: boolean
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('every view: kind, state, last run, pending work now, whether a runner holds it')
    .option('--views <names>', 'only these views', collectList)
    .option('--json', 'print JSON on stdout')
    .action(async (_flags: StatusFlags, command: Command) => {
      const flags = command.optsWithGlobals<StatusFlags>()
      const statuses = await withMatview(flags, (mv) =>
        mv.status(flags.views ? { views: flags.views } : {}),
      )
      if (flags.json) {
        console.log(JSON.stringify(statuses, null, 2))
        return
      }
      if (statuses.length === 0) {
        console.log('no views: add some to matview.config.ts (see `matview --help`)')
        return
      }
      console.log(formatStatusTable(statuses))
      for (const s of statuses) {
        if (s.lastRun?.error) console.log(`${s.name}: last error: ${s.lastRun.error}`)
        if (s.pendingError) console.log(`${s.name}: pending work unknown: ${s.pendingError}`)
      }
    })
}

export function formatStatusTable(statuses: ViewStatus[]): string {
  return formatTable(
    ['VIEW', 'KIND', 'STATE', 'PENDING', 'LAG', 'ROWS', 'RUNNING', 'LAST RUN'],
    statuses.map((s) => [
      s.name,
      s.kind,
      s.state.replace('_', ' ') + (s.stateReason ? ` (${s.stateReason})` : ''),
      s.pendingError ? 'error' : formatPending(s.pending),
      s.pending?.lagSeconds == null ? '-' : `${s.pending.lagSeconds.toFixed(1)}s`,
      s.pending?.targetRows === undefined ? '-' : String(s.pending.targetRows),
      s.running ? 'yes' : 'no',
      formatRun(s.lastRun),
    ]),
  )
}
