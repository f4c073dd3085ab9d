import { execFile } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

// The CLI is tested as users run it: the built bin, as a subprocess (`npm test` builds first).
export const BIN = resolve('dist/cli/main.js')
/** The built package, for config files written by tests to import. */
export const PACKAGE = pathToFileURL(resolve('dist/index.js')).href
/** The environment without database URLs that would override a test's config. */
export const CLI_ENV = { ...process.env, DATABASE_URL: '', MATVIEW_DATABASE_URL: '' }

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs `matview ARGS` in `cwd` (a fresh temporary directory by default). */
export function runCli(
  args: string[],
  cwd = mkdtempSync(join(tmpdir(), 'matview-cli-')),
): Promise<CliResult> {
  return new Promise((done) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env: CLI_ENV }, (error, stdout, stderr) =>
      done({
        code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
        stdout,
        stderr,
      }),
    )
  })
}

/** customer_totals' query, as config files spell it (the demo schema's paid orders per customer). */
export const CUSTOMER_TOTALS_QUERY = `SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid'
  GROUP BY o.customer_id, c.region`

/** A config file's parts, as source text where they are code. */
export interface ConfigFile {
  /** What `database` says: a URL or `pglite:PATH`. */
  database: string
  batchSize: number
  /** Each view's `defineView({ … })`. */
  views: string[]
  /** More top-level fields, each ending in a comma (`workers: { … },`). */
  fields?: string
  /** Statements before `export default`, for constants the views share. */
  preamble?: string
}

/**
 * Writes `matview.config.mjs` in `dir`, importing `defineView` and `sql` from the built
 * package. A string is the file's body as it is, for files that are meant to be wrong.
 */
export function writeConfig(dir: string, config: ConfigFile | string): void {
  const body =
    typeof config === 'string'
      ? config
      : `${config.preamble ?? ''}
export default {
  database: ${JSON.stringify(config.database)},
  batchSize: ${config.batchSize},
  ${config.fields ?? ''}
  views: [
    ${config.views.join(',\n    ')},
  ],
}`
  writeFileSync(
    join(dir, 'matview.config.mjs'),
    `import { defineView, sql } from ${JSON.stringify(PACKAGE)}\n${body}\n`,
  )
}

/**
 * The canonical customer_totals view as config source text: keyed by customer, captured from
 * orders and customers. `fields` adds options (`partitions: 4,`).
 */
export function customerTotalsViewText(query = CUSTOMER_TOTALS_QUERY, fields = ''): string {
  return `defineView({
      name: 'customer_totals',
      key: ['customer_id'],
      query: sql\`${query}\`,
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
      ${fields}
    })`
}

/** Writes a matview.config.mjs with the canonical customer_totals view over `query`. */
export function writeCustomerTotalsConfig(
  dir: string,
  database: string,
  query = CUSTOMER_TOTALS_QUERY,
): void {
  writeConfig(dir, { database, batchSize: 25, views: [customerTotalsViewText(query)] })
}
