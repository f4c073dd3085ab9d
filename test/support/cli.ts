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

/** Writes a matview.config.mjs with the canonical customer_totals view over `query`. */
export function writeCustomerTotalsConfig(dir: string, database: string, query: string): void {
  writeFileSync(
    join(dir, 'matview.config.mjs'),
    `import { defineView, sql } from ${JSON.stringify(PACKAGE)}
export default {
  database: ${JSON.stringify(database)},
  batchSize: 25,
  views: [
    defineView({
      name: 'customer_totals',
      key: ['customer_id'],
      query: sql\`${query}\`,
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
    }),
  ],
}
`,
  )
}
