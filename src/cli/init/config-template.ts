/**
 * The config `matview init` writes: loads as it is (no views yet, so `update` has nothing to
 * fail on), with the common fields explained and an example view to uncomment.
 */
export function configTemplate(language: 'ts' | 'mjs'): string {
  const typed = language === 'ts'
  return `// matview: keeps materialized tables up to date in small batches (see the README of the
// matview package). Every field is optional; ${typed ? 'defineConfig types them.' : 'defineConfig documents them in your editor.'}
import { defineConfig } from 'matview'
// For the example view below: import { defineConfig, defineView, sql } from 'matview'

export default defineConfig({
  // The database: an embedded PostgreSQL (PGlite) kept in .matview/ (git-ignored), or a server:
  // 'postgres://user@host:5432/app'. MATVIEW_DATABASE_URL or DATABASE_URL, and the --database
  // flag, override it.
  database: 'pglite:.matview/pglite',

  // The schema holding matview's catalog (views, run history, change logs).
  // schema: 'matview',

  // The most keys (or rows) one batch handles: each batch is one short transaction.
  // batchSize: 1000,

  // The views. A declarative view is a query kept in a table keyed by \`key\`; \`sources\` names
  // every table the query reads and, for each, which view keys a changed row touches
  // (view key column <- column of the changed row). For example:
  //
  //   defineView({
  //     name: 'customer_totals',
  //     key: ['customer_id'],
  //     query: sql\`
  //       SELECT customer_id, count(*) AS order_count, sum(amount_cents) AS total_cents
  //       FROM orders GROUP BY customer_id\`,
  //     sources: { orders: { customer_id: 'customer_id' } },
  //   }),
  views: [],
})
`
}
