import type { Command } from 'commander'
import { loadConfig } from '../../config/load-config.js'
import { dependenciesOf, orderViews } from '../../runner/view-order.js'
import type { GlobalOptions } from '../options.js'
import { formatTable } from '../output/table.js'

export function registerList(program: Command): void {
  program
    .command('list')
    .description('the views in the config, in the order update runs them (no database needed)')
    .option('--json', 'print JSON on stdout')
    .action(async (_flags: GlobalOptions & { json?: boolean }, command: Command) => {
      const flags = command.optsWithGlobals<GlobalOptions & { json?: boolean }>()
      const config = await loadConfig(
        flags.config !== undefined ? { configPath: flags.config } : {},
      )
      const views = orderViews(config.views).map((v) => ({
        name: v.name,
        kind: v.kind,
        dependsOn: dependenciesOf(v, config.views),
      }))
      if (flags.json) {
        console.log(JSON.stringify(views, null, 2))
      } else if (views.length === 0) {
        console.log(
          `no views${config.configFile ? ` in ${config.configFile}` : ': no matview.config.ts found'}`,
        )
      } else {
        console.log(
          formatTable(
            ['VIEW', 'KIND', 'DEPENDS ON'],
            views.map((v) => [v.name, v.kind, v.dependsOn.join(', ') || '-']),
          ),
        )
      }
    })
}
