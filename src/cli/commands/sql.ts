import type { Command } from 'commander'
import { loadConfig } from '../../config/load-config.js'
import { viewSql } from '../../matview.js'
import type { GlobalOptions } from '../options.js'

export function registerSql(program: Command): void {
  program
    .command('sql')
    .description(
      'print the DDL create would run for declarative views not created yet: a script for your own migration tool that applies to any database',
    )
    .argument('[names...]', 'the views (default: every declarative view of the config)')
    .addHelpText(
      'after',
      `
Prints a commented SQL script: the catalog schema and its migrations, then per view its
catalog rows, target table, primary key, indexes, change log, stages, capture functions and
triggers. Nothing is changed: each statement is tried in a transaction that is rolled back (it
holds, briefly, the locks CREATE TRIGGER takes on the sources). The script applies to any
database: each migration runs only where the catalog lacks it, and each view (skipped where
that catalog has it) takes the next id of that database's catalog for its objects' names.
Apply it in one transaction. Then "matview create" checks each object against the definition
(naming the first that differs, changing nothing) and fills the tables.

Exit codes: 0 printed, 2 usage, config or definition error (unknown or hand-written view).

Examples:
  $ matview sql > migrations/20260101_customer_totals.sql
  $ matview sql customer_totals | psql "$DATABASE_URL" --single-transaction && matview create`,
    )
    .action(async (names: string[], _flags: GlobalOptions, command: Command) => {
      const flags = command.optsWithGlobals<GlobalOptions>()
      const config = await loadConfig({
        ...(flags.config !== undefined ? { configPath: flags.config } : {}),
        ...(flags.database !== undefined ? { database: flags.database } : {}),
        ...(flags.schema !== undefined ? { schema: flags.schema } : {}),
      })
      process.stdout.write(await viewSql(config, names))
    })
}
