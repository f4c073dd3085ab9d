import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { customerTotalsViewText, runCli, writeConfig } from '../support/cli.js'
import { useCliDatabase } from '../support/cli-database.js'
import { DIALECTS } from '../support/dialects.js'

// What the CLI says when something is wrong: one line, once, naming the view, the field or the
// hook; the stack trace only with -v.

const SCHEMA = `
  CREATE TABLE customers (id int PRIMARY KEY, region text NOT NULL);
  CREATE TABLE orders (id serial PRIMARY KEY, customer_id int NOT NULL, amount_cents int NOT NULL,
                       status text NOT NULL DEFAULT 'paid');
  INSERT INTO customers SELECT g, 'r' || (g % 3) FROM generate_series(1, 30) g;
  INSERT INTO orders (customer_id, amount_cents) SELECT 1 + g % 30, g FROM generate_series(1, 300) g;`

/** region_sums reads customer_totals' table: a view on a view. */
const REGION_SUMS = `defineView({
      name: 'region_sums',
      key: ['region'],
      query: sql\`SELECT region, sum(total_cents) AS total FROM customer_totals GROUP BY region\`,
      sources: { customer_totals: { region: 'region' } },
    })`

describe('config mistakes, one line and exit 2', () => {
  it('names a misspelt view field and what it likely meant', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeConfig(dir, {
      database: 'pglite:db',
      batchSize: 10,
      views: [customerTotalsViewText().replace('sources:', 'soruces:')],
    })
    const result = await runCli(['list'], dir)
    expect(result.code).toBe(2)
    expect(result.stderr.trim().split('\n')).toHaveLength(1)
    expect(result.stderr).toContain('unknown field "soruces" in views.0 (did you mean sources?)')
  })

  it('says a config file has no default export', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-cli-'))
    writeFileSync(join(dir, 'matview.config.mjs'), 'export const config = { batchSize: 10 }\n')
    const result = await runCli(['list'], dir)
    expect(result.code).toBe(2)
    expect(result.stderr.trim()).toMatch(
      /^matview: config \S+matview\.config\.mjs has no default export; end it with `export default defineConfig/,
    )
  })
})

describe.each(DIALECTS)('messages of update, history and verify, on %s', (dialect) => {
  const database = useCliDatabase(dialect, (d) => d.exec(SCHEMA))

  it('a view on a view whose upstream failed says the upstream failed', async () => {
    writeConfig(database.dir, {
      database: database.spec,
      batchSize: 50,
      views: [
        customerTotalsViewText(
          `SELECT o.customer_id, c.region, sum(o.nosuch) AS total_cents
           FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1, 2`,
        ),
        REGION_SUMS,
      ],
    })
    const result = await runCli(['update'], database.dir)
    expect(result.code).toBe(1)
    expect(result.stdout).toMatch(/^customer_totals: failed, .*column o\.nosuch does not exist$/m)
    expect(result.stdout).toMatch(
      /^region_sums: failed, .*"customer_totals", a view it reads, failed in this run; fix that one first/m,
    )
    expect(result.stdout).not.toMatch(/relation .*customer_totals.* does not exist/)
  })

  it('a dry run of a view on a view says more comes after its upstream applies', async () => {
    writeConfig(database.dir, {
      database: database.spec,
      batchSize: 50,
      views: [customerTotalsViewText(), REGION_SUMS],
    })
    expect((await runCli(['update'], database.dir)).code).toBe(0)
    await database.use((db) =>
      sql`INSERT INTO orders (customer_id, amount_cents) VALUES (1, 5), (2, 5)`.execute(db),
    )
    const dry = await runCli(['update', '--dry-run'], database.dir)
    expect(dry.code).toBe(0)
    expect(dry.stdout).toMatch(/^customer_totals: would apply 2 \(keys 2\)$/m)
    expect(dry.stdout).toMatch(
      /^region_sums: would apply 0, more after "customer_totals" applies its pending work$/m,
    )
  })

  it('history of an unknown view exits 2 and names the known ones', async () => {
    writeConfig(database.dir, {
      database: database.spec,
      batchSize: 50,
      views: [customerTotalsViewText()],
    })
    const unknown = await runCli(['history', 'nosuch'], database.dir)
    expect(unknown.code).toBe(2)
    expect(unknown.stderr.trim()).toBe(
      'matview: unknown view "nosuch"; known views: customer_totals',
    )
    // A configured view not run yet is no error.
    const none = await runCli(['history', 'customer_totals'], database.dir)
    expect(none.code).toBe(0)
    expect(none.stdout.trim()).toBe('customer_totals: no runs recorded')
  })

  it('verify --json keeps integer keys as numbers', async () => {
    writeConfig(database.dir, {
      database: database.spec,
      batchSize: 50,
      views: [customerTotalsViewText()],
    })
    expect((await runCli(['update'], database.dir)).code).toBe(0)
    await database.use((db) => sql`DELETE FROM customer_totals WHERE customer_id = 7`.execute(db))
    const verify = await runCli(['verify', '--json'], database.dir)
    const report = JSON.parse(verify.stdout)
    expect(report.views[0].missing).toEqual({ count: 1, first: [{ customer_id: 7 }] })
  })

  it('a failing hook: its error once, on the result line; -v adds its stack with the hook and the view', async () => {
    writeFileSync(
      join(database.dir, 'matview.config.mjs'),
      `export default {
  database: ${JSON.stringify(database.spec)},
  views: [{
    kind: 'handwritten', name: 'breaks',
    needsInsert: () => 1,
    doInsert: function insertEverything() { throw new Error('the hook is broken') },
  }],
}
`,
    )
    const plain = await runCli(['update'], database.dir)
    expect(plain.code).toBe(1)
    expect(plain.stderr).toBe('')
    expect(plain.stdout.match(/the hook is broken/g)).toHaveLength(1)
    expect(plain.stdout).toMatch(
      /^breaks: failed, .*: view "breaks": doInsert threw: the hook is broken$/m,
    )
    const verbose = await runCli(['update', '-v'], database.dir)
    expect(verbose.code).toBe(1)
    expect(verbose.stderr).toContain('view "breaks" failed: ')
    expect(verbose.stderr).toContain('doInsert threw: the hook is broken')
    // The hook's own frame, in the user's file.
    expect(verbose.stderr).toMatch(/at (Object\.)?insertEverything .*matview\.config\.mjs:\d+/)
    expect(verbose.stdout.match(/the hook is broken/g)).toHaveLength(1)
  })
})
