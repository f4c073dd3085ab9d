import { execFile, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { customerTotalsViewText, runCli, writeConfig } from '../support/cli.js'
import { useCliDatabase } from '../support/cli-database.js'
import { DIALECTS } from '../support/dialects.js'

// Several CLI processes and two tsc runs: generous on a loaded machine.
const TIMEOUT = 300_000

const SCHEMA = `
CREATE TYPE order_status AS ENUM ('open', 'paid');
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, region text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
  amount_cents bigint NOT NULL, status text NOT NULL, kind order_status NOT NULL DEFAULT 'paid');
INSERT INTO customers VALUES (1, 'Ann', 'eu'), (2, 'Bob', 'us');
INSERT INTO orders (customer_id, amount_cents, status) VALUES (1, 500, 'paid'), (2, 100, 'paid');
`

/** A second view with the types the canonical one lacks: an enum, an array, JSON, a date. */
const ORDER_FACTS = `defineView({
      name: 'order_facts',
      key: ['customer_id'],
      query: sql\`SELECT customer_id, array_agg(id ORDER BY id) AS order_ids, max(kind) AS last_kind,
        jsonb_build_object('n', count(*)) AS summary, max(amount_cents)::int AS biggest, true AS seen,
        date '2026-01-01' AS since FROM orders GROUP BY customer_id\`,
      sources: { orders: { customer_id: 'customer_id' } },
    })`

const HANDWRITTEN = `{ kind: 'handwritten', name: 'no_table', needsInsert: () => 0, doInsert: () => 0 }`

const TSC = resolve('node_modules/typescript/bin/tsc')

/** drizzle-orm is no dependency of matview: installed once (from npm's cache when it can). */
let drizzleInstall: Promise<string> | undefined
function drizzleModules(): Promise<string> {
  drizzleInstall ??= new Promise((done, fail) => {
    const dir = mkdtempSync(join(tmpdir(), 'matview-drizzle-'))
    writeFileSync(join(dir, 'package.json'), '{ "name": "drizzle-consumer", "private": true }')
    execFile(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        '--ignore-scripts',
        'drizzle-orm@0.45',
      ],
      { cwd: dir },
      (error) => (error ? fail(error) : done(join(dir, 'node_modules'))),
    )
  })
  return drizzleInstall
}

/** Compiles `source` beside the generated types in a project where kysely resolves. */
function compile(
  typesText: string,
  source: string,
  modules: Record<string, string> = { kysely: resolve('node_modules/kysely') },
): { code: number; output: string } {
  const dir = mkdtempSync(join(tmpdir(), 'matview-types-'))
  mkdirSync(join(dir, 'node_modules'))
  for (const [name, path] of Object.entries(modules))
    symlinkSync(path, join(dir, 'node_modules', name), 'dir')
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }')
  writeFileSync(join(dir, 'views.ts'), typesText)
  writeFileSync(join(dir, 'app.ts'), source)
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        module: 'nodenext',
        target: 'es2022',
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: [],
      },
      files: ['app.ts'],
    }),
  )
  const result = spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8' })
  return { code: result.status ?? 1, output: `${result.stdout}${result.stderr}` }
}

describe.each(DIALECTS)('matview types on %s', (dialect) => {
  const database = useCliDatabase(dialect, async (db) => {
    await db.exec(SCHEMA)
    writeConfig(db.dir, {
      database: db.spec,
      batchSize: 100,
      views: [customerTotalsViewText(), ORDER_FACTS, HANDWRITTEN],
    })
  })

  it(
    "writes row types of the views' tables that a Kysely consumer compiles against",
    async () => {
      const early = await runCli(['types'], database.dir)
      expect(early.code).toBe(2)
      expect(early.stderr.trim()).toBe(
        'matview: view "customer_totals" has no table yet: run matview create (or update) first, then matview types',
      )
      expect((await runCli(['update'], database.dir)).code).toBe(0)
      const written = await runCli(['types', '--out', 'src/db/views.ts'], database.dir)
      expect(written.code).toBe(0)
      expect(written.stdout.trim()).toBe('wrote src/db/views.ts: row types of 2 views')
      expect(written.stderr.trim()).toBe(
        'no_table: skipped, a hand-written view with no table named no_table',
      )
      const text = readFileSync(join(database.dir, 'src/db/views.ts'), 'utf8')
      // bigint is a string with node-postgres (it may not fit a number), a number with PGlite.
      const int8 = dialect === 'postgres' ? 'string' : 'number | bigint'
      const int8Array = dialect === 'postgres' ? 'string[]' : '(number | bigint)[]'
      expect(text).toContain(`export interface CustomerTotals {
  customer_id: ${int8}
  region: string | null
  order_count: ${int8} | null
  total_cents: string | null
}`)
      expect(text).toContain(`export interface OrderFacts {
  customer_id: ${int8}
  order_ids: ${int8Array} | null
  last_kind: "open" | "paid" | null
  summary: JsonValue | null
  biggest: number | null
  seen: boolean | null
  since: Date | null
}`)
      expect(text).toContain(`export interface DB {
  customer_totals: CustomerTotals
  order_facts: OrderFacts
}`)

      // The values the driver returns have the types written (the test reads with the same driver).
      const row = await database.use(
        async (db) =>
          (
            await sql<
              Record<string, unknown>
            >`SELECT * FROM order_facts WHERE customer_id = 1`.execute(db)
          ).rows[0]!,
      )
      expect(typeof row.customer_id).toBe(dialect === 'postgres' ? 'string' : 'number')
      expect(typeof (row.order_ids as unknown[])[0]).toBe(
        dialect === 'postgres' ? 'string' : 'number',
      )
      expect(row.last_kind).toBe('paid')
      expect(row.summary).toEqual({ n: 1 })
      expect(typeof row.biggest).toBe('number')
      expect(row.since).toBeInstanceOf(Date)

      const consumer = `import { Kysely, PostgresDialect } from 'kysely'
import type { CustomerTotals, DB } from './views.js'

declare const dialect: PostgresDialect
const db = new Kysely<DB>({ dialect })

export async function topRegions(): Promise<Array<{ region: string | null; total_cents: string | null }>> {
  return db.selectFrom('customer_totals').select(['region', 'total_cents'])
    .where('region', '=', 'eu').orderBy('total_cents', 'desc').execute()
}
export async function facts(): Promise<'open' | 'paid' | null | undefined> {
  const row = await db.selectFrom('order_facts').selectAll().executeTakeFirst()
  return row?.last_kind
}
export const one: Pick<CustomerTotals, 'region'> = { region: 'eu' }
`
      expect(compile(text, consumer)).toEqual({ code: 0, output: '' })
      // The types are real: a column that is not there, or a wrong type, does not compile.
      const wrong = compile(
        text,
        `import { Kysely, PostgresDialect } from 'kysely'
import type { DB } from './views.js'
declare const dialect: PostgresDialect
const db = new Kysely<DB>({ dialect })
export const q = db.selectFrom('customer_totals').select(['nosuch'])
export async function n(): Promise<number> {
  const row = await db.selectFrom('order_facts').select('last_kind').executeTakeFirstOrThrow()
  return row.last_kind
}
`,
      )
      expect(wrong.code).not.toBe(0)
      expect(wrong.output).toMatch(/app\.ts\(5,\d+\): error TS\d+/) // the select of nosuch
      expect(wrong.output).toMatch(/app\.ts\(8,\d+\): error TS2322/) // an enum is no number
    },
    TIMEOUT,
  )

  it(
    '--drizzle writes pgTable declarations a Drizzle consumer compiles against',
    async () => {
      const modules = drizzleModules()
      expect((await runCli(['update'], database.dir)).code).toBe(0)
      const written = await runCli(['types', '--drizzle'], database.dir)
      expect(written.code, written.stderr).toBe(0)
      const text = written.stdout
      expect(text).toContain(
        'export const orderStatusEnum = pgEnum("order_status", ["open","paid"])',
      )
      expect(text).toContain(`export const customerTotals = pgTable("customer_totals", {
  customer_id: bigint("customer_id", { mode: 'number' }).notNull(),
  region: text("region"),
  order_count: bigint("order_count", { mode: 'number' }),
  total_cents: numeric("total_cents"),
})
export type CustomerTotals = typeof customerTotals.$inferSelect`)
      expect(text).toContain('  order_ids: bigint("order_ids", { mode: \'number\' }).array(),')
      expect(text).toContain('  last_kind: orderStatusEnum("last_kind"),')
      const drizzle = { 'drizzle-orm': join(await modules, 'drizzle-orm') }
      const consumer = `import { eq } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { type CustomerTotals, customerTotals, orderFacts } from './views.js'

declare const db: PgDatabase<PgQueryResultHKT>

export async function eu(): Promise<Array<{ region: string | null; total: string | null }>> {
  return db.select({ region: customerTotals.region, total: customerTotals.total_cents })
    .from(customerTotals).where(eq(customerTotals.region, 'eu'))
}
export async function kinds(): Promise<Array<'open' | 'paid' | null>> {
  return (await db.select().from(orderFacts)).map((row) => row.last_kind)
}
export const one: Pick<CustomerTotals, 'customer_id' | 'order_count'> = { customer_id: 1, order_count: null }
`
      expect(compile(text, consumer, drizzle)).toEqual({ code: 0, output: '' })
      const wrong = compile(
        text,
        `import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { customerTotals } from './views.js'
declare const db: PgDatabase<PgQueryResultHKT>
export const q = db.select({ x: customerTotals.nosuch }).from(customerTotals)
`,
        drizzle,
      )
      expect(wrong.code).not.toBe(0)
      expect(wrong.output).toMatch(/app\.ts\(4,\d+\): error TS2339/) // no column nosuch
    },
    TIMEOUT,
  )
})
