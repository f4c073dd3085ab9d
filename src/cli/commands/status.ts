import type { Command } from 'commander'
import type { WorkerRecord } from '../../catalog/workers.js'
import { checkProblem, type ViewStatus } from '../../runner/status.js'
import { explainEmbeddedInUse } from '../embedded-in-use.js'
import { EXIT } from '../exit-codes.js'
import { withMatview } from '../open-matview.js'
import { collectList, type GlobalOptions } from '../options.js'
import { formatCount, formatPending, formatRun } from '../output/format.js'
import { formatTable } from '../output/table.js'

interface StatusFlags extends GlobalOptions {
  views?: string[]
  json?: boolean
  check?: boolean
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description('every view: kind, state, last run, pending work now, whether a runner holds it')
    .option('--views <names>', 'only these views', collectList)
    .option('--json', 'print JSON on stdout (the views, as before; workers are in the text form)')
    .option(
      '--check',
      `exit ${EXIT.checkFailed} when a view is over its maxLag, its last run failed or it has keys set aside (for alerts and probes)`,
    )
    .addHelpText(
      'after',
      `
Exit codes: 0 ok, ${EXIT.checkFailed} with --check when a view is over its maxLag, its last run
failed or it has keys set aside, 2 usage or config error.`,
    )
    .action(async (_flags: StatusFlags, command: Command) => {
      const flags = command.optsWithGlobals<StatusFlags>()
      const [statuses, workers, database] = await withMatview(
        flags,
        async (mv) =>
          [
            await mv.status(flags.views ? { views: flags.views } : {}),
            await mv.workers(),
            `${mv.database.description} (from ${mv.config.databaseFrom})`,
          ] as const,
      ).catch((error: unknown) => {
        throw explainEmbeddedInUse(error, 'status')
      })
      const problems = statuses.flatMap((s) => {
        const problem = checkProblem(s)
        return problem ? [`${s.name}: ${problem}`] : []
      })
      if (flags.check && problems.length > 0) process.exitCode = EXIT.checkFailed
      if (flags.json) {
        console.log(JSON.stringify(statuses, null, 2))
        return
      }
      console.log(`database: ${database}\n`)
      if (statuses.length === 0) {
        console.log('no views: add some to matview.config.ts (see `matview --help`)')
      } else {
        console.log(formatStatusTable(statuses))
        for (const s of statuses) {
          if (s.lastRun?.error) console.log(`${s.name}: last error: ${s.lastRun.error}`)
          if (s.pendingError) console.log(`${s.name}: pending work unknown: ${s.pendingError}`)
          if (s.setAside > 0)
            console.log(
              `${s.name}: ${formatCount(s.setAside)} key${s.setAside === 1 ? '' : 's'} set aside after failing alone; fix the data, then run "matview retry ${s.name}"`,
            )
        }
      }
      if (workers.length > 0) console.log(`\n${formatWorkersTable(workers)}`)
      if (flags.check)
        console.log(problems.length > 0 ? `check failed: ${problems.join('; ')}` : 'check ok')
    })
}

export function formatWorkersTable(workers: WorkerRecord[]): string {
  const ago = (at: Date) => `${Math.max(0, Math.round((Date.now() - at.getTime()) / 1000))}s ago`
  return formatTable(
    ['WORKER', 'HOST', 'PID', 'STARTED', 'HEARTBEAT', 'STATE', 'DOING'],
    workers.map((w) => [
      String(w.id),
      w.host,
      String(w.pid),
      w.startedAt.toISOString(),
      ago(w.heartbeatAt),
      w.dead ? 'dead' : 'alive',
      w.doing ?? '-',
    ]),
  )
}

export function formatStatusTable(statuses: ViewStatus[]): string {
  return formatTable(
    ['VIEW', 'KIND', 'STATE', 'PENDING', 'LAG', 'ROWS', 'RUNNING', 'LAST RUN'],
    statuses.map((s) => [
      s.name,
      s.kind,
      s.state.replace('_', ' ') + (s.stateReason ? ` (${s.stateReason})` : ''),
      s.pendingError ? 'error' : formatPending(s.pending),
      (s.pending?.lagSeconds == null ? '-' : `${s.pending.lagSeconds.toFixed(1)}s`) +
        (s.overMaxLag ? ` (over maxLag ${s.maxLagSeconds}s)` : ''),
      s.pending?.targetRows === undefined ? '-' : formatCount(s.pending.targetRows),
      s.running ? 'yes' : 'no',
      formatRun(s.lastRun),
    ]),
  )
}
