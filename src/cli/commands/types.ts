import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import type { Command } from 'commander'
import { viewTypes } from '../../runner/view-types.js'
import { drizzleViewTables } from '../../runner/view-types-drizzle.js'
import { withMatview } from '../open-matview.js'
import type { GlobalOptions } from '../options.js'

interface TypesFlags extends GlobalOptions {
  out?: string
  drizzle?: boolean
}

export function registerTypes(program: Command): void {
  program
    .command('types')
    .description("write TypeScript row types of every view's table, for typed reads with Kysely")
    .option('--out <file>', 'write to this file (default: print on stdout)')
    .option('--drizzle', 'write Drizzle pgTable declarations and their row types instead')
    .addHelpText(
      'after',
      `
Reads each view's table from the database (column names, types, NOT NULL, enum labels) and
writes one interface per view plus a DB interface keyed by view name, as kysely-codegen does.
Value types are those the database's driver returns (int8: a string with node-postgres, a
number with PGlite). Declarative views must have been created; a hand-written view is typed
when a table of its name exists. Run it again after a view changes. --drizzle writes pgTable
declarations (drizzle-orm/pg-core) and their $inferSelect row types instead.

Exit codes: 0 written, 2 a view has no table yet, usage or config error.

Examples:
  $ matview types --out src/db/views.ts
  // then: const views = db.withTables<DB>(); await views.selectFrom('customer_totals').selectAll().execute()`,
    )
    .action(async (_flags: TypesFlags, command: Command) => {
      const flags = command.optsWithGlobals<TypesFlags>()
      const types = await withMatview(flags, (mv) =>
        (flags.drizzle ? drizzleViewTables : viewTypes)(mv.database, mv.config),
      )
      for (const view of types.skipped)
        console.error(`${view}: skipped, a hand-written view with no table named ${view}`)
      if (flags.out === undefined) {
        process.stdout.write(types.text)
        return
      }
      const path = resolve(flags.out)
      mkdirSync(dirname(path), { recursive: true })
      writeFileSync(path, types.text)
      console.log(
        `wrote ${flags.out}: row types of ${types.views} view${types.views === 1 ? '' : 's'}`,
      )
    })
}
