import { readFileSync } from 'node:fs'
import type { Command } from 'commander'
import { loadConfig } from '../../config/load-config.js'
import { connect } from '../../dialects/connect.js'
import { errorMessage, UsageError } from '../../errors/matview-error.js'
import { explainEmbeddedInUse } from '../embedded-in-use.js'
import { runScript } from '../exec/run-script.js'
import { splitStatements } from '../exec/split-statements.js'
import type { GlobalOptions } from '../options.js'

interface ExecFlags extends GlobalOptions {
  file?: string
  singleTransaction?: boolean
}

export function registerExec(program: Command): void {
  program
    .command('exec')
    .description(
      'run SQL on the configured database (the embedded one too): create and seed tables, query views',
    )
    .argument('[sql]', 'the SQL: one statement or several separated by ;')
    .option('-f, --file <path>', 'read the SQL from a file (- for stdin)')
    .option('-1, --single-transaction', 'run the whole script in one transaction')
    .addHelpText(
      'after',
      `
Runs each statement in turn on one connection, as psql does: a statement that returns rows
prints them as a table, any other prints one line (INSERT 3, CREATE TABLE). The first error
stops the script with one line naming the statement and its line; the statements before it
stay applied unless --single-transaction. The catalog is not created or read.

Exit codes: 0 every statement ran, 1 a statement failed, 2 usage or config error, or the
embedded database is held by another process (a worker).

Examples:
  $ matview exec "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, amount_cents int)"
  $ matview exec -f seed.sql
  $ matview exec "SELECT * FROM customer_totals ORDER BY total_cents DESC LIMIT 5"`,
    )
    .action(async (text: string | undefined, _flags: ExecFlags, command: Command) => {
      const flags = command.optsWithGlobals<ExecFlags>()
      if (text !== undefined && flags.file !== undefined)
        throw new UsageError('give the SQL as an argument or with --file, not both')
      if (text === undefined && flags.file === undefined)
        throw new UsageError(
          'give the SQL to run: matview exec "SELECT 1" or matview exec -f file.sql',
        )
      const script = text ?? readScript(flags.file!)
      const statements = splitStatements(script)
      if (statements.length === 0)
        throw new UsageError(`no SQL statement in ${flags.file ?? 'the argument'}`)
      const config = await loadConfig({
        ...(flags.config !== undefined ? { configPath: flags.config } : {}),
        ...(flags.database !== undefined ? { database: flags.database } : {}),
      })
      const database = await connect(config.database).catch((error: unknown) => {
        throw explainEmbeddedInUse(error, 'exec')
      })
      try {
        await runScript(database.db, statements, {
          singleTransaction: flags.singleTransaction === true,
          write: (out) => process.stdout.write(out),
        })
      } finally {
        await database.close()
      }
    })
}

function readScript(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8')
  } catch (error) {
    throw new UsageError(`cannot read ${file}: ${errorMessage(error)}`)
  }
}
