import type { Command } from 'commander'
import { sql } from 'kysely'
import { createCustomerTotalsTable, customerTotalsView } from '../../demo/customer-totals-view.js'
import { createDemoSchema, customerTotalsQuery } from '../../demo/demo-schema.js'
import { regionTotalsQuery, regionTotalsView } from '../../demo/region-totals-view.js'
import { Matview } from '../../matview.js'
import { createConsoleLogger } from '../../runner/logger.js'
import { queryDifferences } from '../../views/query-differences.js'
import { EXIT } from '../exit-codes.js'
import { parsePositiveInt } from '../options.js'
import { formatCount, formatSummary } from '../output/format.js'
import { createProgressReporter } from '../output/progress.js'
import { formatStatusTable } from './status.js'

interface DemoFlags {
  customers: number
  orders: number
  batchSize: number
  verbose?: boolean
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description(
      'a tour on an embedded in-memory database: sample data, a view, two updates, status (no server, no config)',
    )
    .option('--customers <n>', 'customers to create', parsePositiveInt('--customers'), 2000)
    .option('--orders <n>', 'orders to create', parsePositiveInt('--orders', 10_000_000), 20_000)
    .option('--batch-size <n>', 'rows per batch', parsePositiveInt('--batch-size'), 250)
    .action(async (_flags: DemoFlags, command: Command) => {
      const flags = command.optsWithGlobals<DemoFlags>()
      const say = (line = '') => console.log(line)
      const mv = await Matview.open({
        database: 'pglite:memory',
        batchSize: flags.batchSize,
        views: [customerTotalsView, regionTotalsView],
      })
      try {
        if (flags.verbose) process.stderr.write(`debug database: ${mv.database.description}\n`)
        const { db } = mv.database
        say(
          'matview demo: an embedded PostgreSQL (PGlite) in memory; nothing to install, nothing kept.',
        )
        say()
        await createDemoSchema(db, { customers: flags.customers, orders: flags.orders })
        await createCustomerTotalsTable(db)
        say(
          `1. Sample data: ${formatCount(flags.customers)} customers, ${formatCount(flags.orders)} orders.`,
        )
        say('2. A hand-written view, customer_totals: paid order totals per customer, kept in a')
        say(
          '   table of its own by six hooks (needsInsert/doInsert, needsUpdate/doUpdate, needsDelete/doDelete).',
        )
        say('   A declarative view, region_totals: a SQL query and a key; matview captures changes')
        say('   on orders and customers and recomputes only the regions they touch.')
        say()
        say(
          '3. $ matview update      # the first run fills the table, one short transaction per batch',
        )
        const update = async () => {
          const reporter = createProgressReporter({
            live: process.stderr.isTTY === true,
            write: say,
          })
          const logger = createConsoleLogger({ verbose: flags.verbose === true })
          const summary = await mv.update({ onProgress: (e) => reporter.onProgress(e), logger })
          reporter.stop()
          say(formatSummary(summary))
          return summary
        }
        await update()
        say()
        say('4. Some writes: 40 new paid orders, 25 orders paid, 15 orders deleted.')
        await sql`
          INSERT INTO orders (customer_id, amount_cents, status)
          SELECT 1 + (g * 13) % ${flags.customers}::int, 4200, 'paid' FROM generate_series(1, 40) g`.execute(
          db,
        )
        await sql`
          UPDATE orders SET status = 'paid'
          WHERE id IN (SELECT id FROM orders WHERE status = 'pending' ORDER BY id LIMIT 25)`.execute(
          db,
        )
        await sql`DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id DESC LIMIT 15)`.execute(
          db,
        )
        say()
        say('5. $ matview update      # applies only what those writes changed')
        const second = await update()
        say()
        say('6. $ matview status')
        say(formatStatusTable(await mv.status()))
        say()
        let differences = 0
        for (const [table, query, columns] of [
          [
            'customer_totals',
            customerTotalsQuery,
            ['customer_id', 'region', 'order_count', 'total_cents'],
          ],
          ['region_totals', regionTotalsQuery, ['region', 'order_count', 'total_cents']],
        ] as const) {
          const diff = await queryDifferences(db, table, query, [...columns])
          const n = diff.extra.length + diff.missing.length
          differences += n
          say(`7. ${table} equals its query: ${n === 0 ? 'yes' : `no, ${n} rows differ`}`)
        }
        say()
        say('Next: write a matview.config.ts with your own views (see the README), then run')
        say('`matview update` from cron, or `matview status` to see how they are doing.')
        process.exitCode =
          differences === 0 && second.views.every((v) => v.outcome === 'done')
            ? EXIT.ok
            : EXIT.viewFailed
      } finally {
        await mv.close()
      }
    })
}
