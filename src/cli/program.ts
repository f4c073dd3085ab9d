import { Command } from 'commander'
import { registerCreate } from './commands/create.js'
import { registerDemo } from './commands/demo.js'
import { registerDrop } from './commands/drop.js'
import { registerExec } from './commands/exec.js'
import { registerHistory } from './commands/history.js'
import { registerInit } from './commands/init.js'
import { registerList } from './commands/list.js'
import { registerRebuild } from './commands/rebuild.js'
import { registerRetry } from './commands/retry.js'
import { registerSql } from './commands/sql.js'
import { registerStatus } from './commands/status.js'
import { registerTypes } from './commands/types.js'
import { registerUpdate } from './commands/update.js'
import { registerVerify } from './commands/verify.js'
import { registerWorker } from './commands/worker.js'

/** The `matview` command line, without running it (tests parse it directly). */
export function createProgram(version: string): Command {
  const program = new Command()
    .name('matview')
    .description(
      'Keep materialized tables up to date in small batches, on PostgreSQL or embedded PGlite.',
    )
    .version(version, '--version', 'print the version')
    .option(
      '-c, --config <path>',
      'config file (default: matview.config.ts or .config/matview.config.ts)',
    )
    .option(
      '--database <url>',
      'database URL; overrides MATVIEW_DATABASE_URL, DATABASE_URL and the config',
    )
    .option('--schema <name>', "matview's catalog schema (default: the config, else matview)")
    .option('-v, --verbose', 'debug logs, and stack traces on errors')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureHelp({ showGlobalOptions: true })
  registerInit(program)
  registerUpdate(program)
  registerWorker(program)
  registerCreate(program)
  registerStatus(program)
  registerHistory(program)
  registerRebuild(program)
  registerVerify(program)
  registerSql(program)
  registerRetry(program)
  registerDrop(program)
  registerList(program)
  registerTypes(program)
  registerExec(program)
  registerDemo(program)
  for (const command of program.commands)
    command.exitOverride().showHelpAfterError('(run with --help for usage)')
  return program
}
