import { spawn } from 'node:child_process'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, type RawBuilder, sql } from 'kysely'
import { expect } from 'vitest'
import { queryDifferences } from '../../src/views/query-differences.js'
import { CATALOG_FUNCTIONS, CATALOG_TABLES } from './catalog.js'
import {
  BIN,
  CLI_ENV,
  CUSTOMER_TOTALS_QUERY as CUSTOMER_TOTALS,
  customerTotalsViewText,
  runCli,
  writeConfig,
} from './cli.js'

// What the SIGKILL tests (test/proof/faults*.test.ts) share: three views over the demo schema,
// a bin killed at a chosen moment, and the checks after a recovery.

/** A small deterministic generator, so a failing seed can be run again. */
export function random(seed: number) {
  let state = seed >>> 0 || 1
  return () => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 2 ** 32
  }
}

export const REGION_TOTALS = `SELECT c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.status = 'paid' GROUP BY c.region`
export const REGION_SUMMARY = `SELECT region, count(*) AS customers, sum(total_cents) AS total_cents
  FROM customer_totals GROUP BY region`

export const CHECKS: Array<{
  view: string
  query: (variant: number) => string
  columns: string[]
}> = [
  {
    view: 'customer_totals',
    // Variant 1 counts o.id instead of *: the same rows, another text, so a rebuild.
    query: (variant) =>
      variant === 0 ? CUSTOMER_TOTALS : CUSTOMER_TOTALS.replace('count(*)', 'count(o.id)'),
    columns: ['customer_id', 'region', 'order_count', 'total_cents'],
  },
  {
    view: 'region_totals',
    query: () => REGION_TOTALS,
    columns: ['region', 'order_count', 'total_cents'],
  },
  {
    view: 'region_summary',
    query: () => REGION_SUMMARY,
    columns: ['region', 'customers', 'total_cents'],
  },
]

/**
 * Three views: keys held by the changed rows, keys found by a query at claim time, and a view on
 * a view. `variant` changes customer_totals' text, which asks for a rebuild.
 */
export function writeFaultsConfig(dir: string, url: string, variant: number): void {
  writeConfig(dir, {
    database: url,
    batchSize: 40,
    views: [
      customerTotalsViewText(CHECKS[0]!.query(variant)),
      `defineView({
      name: 'region_totals',
      key: ['region'],
      query: sql\`${REGION_TOTALS}\`,
      sources: {
        customers: { region: 'region' },
        orders: sql\`SELECT c.region FROM customers c JOIN changed o ON o.customer_id = c.id\`,
      },
    })`,
      `defineView({
      name: 'region_summary',
      key: ['region'],
      query: sql\`${REGION_SUMMARY}\`,
      sources: { customer_totals: { region: 'region' } },
    })`,
    ],
  })
}

/** Starts the bin, kills it with SIGKILL after `delayMs`; says whether it was still running. */
export async function killAfter(args: string[], cwd: string, delayMs: number): Promise<boolean> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd, env: CLI_ENV, stdio: 'ignore' })
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)))
  const finished = await Promise.race([exited.then(() => true), sleep(delayMs).then(() => false)])
  if (finished) return false
  child.kill('SIGKILL')
  await exited
  return true
}

/** How long the bin takes to start and load its config, before its first statement (ms). */
export async function startupTime(dir: string): Promise<number> {
  const began = Date.now()
  const result = await runCli(['list'], dir)
  expect(result.code, result.stderr).toBe(0)
  return Date.now() - began
}

export async function waitFor(
  condition: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out waiting')
    await sleep(20)
  }
}

/** What state the killed run left the views in, for the tally of moments hit. */
export async function phaseOf(db: Kysely<any>): Promise<string> {
  const exists = await sql<{ ok: boolean }>`
    SELECT to_regclass('matview.views') IS NOT NULL AS ok`.execute(db)
  if (!exists.rows[0]!.ok) return 'catalog'
  const { rows } = await sql<{ name: string; state: string; rebuild_id: number | null }>`
    SELECT name, state, rebuild_id FROM matview.views ORDER BY id`.execute(db)
  if (rows.some((r) => r.state === 'building')) return 'backfill'
  if (rows.length < CHECKS.length) return 'create'
  if (rows.some((r) => r.state === 'rebuilding' || r.rebuild_id !== null)) {
    const { rows: shadows } = await sql<{ checkpoint: { method?: string } | null }>`
      SELECT rebuild_checkpoint AS checkpoint FROM matview.views WHERE rebuild_id IS NOT NULL`.execute(
      db,
    )
    return shadows[0]?.checkpoint?.method === 'done' ? 'catch-up or swap' : 'filling the shadow'
  }
  return 'apply'
}

/** customer_totals' definition hash in the catalog (it changes when a rebuild swaps). */
export async function hashOf(db: Kysely<any>): Promise<string | undefined> {
  const exists = await sql<{ ok: boolean }>`
    SELECT to_regclass('matview.views') IS NOT NULL AS ok`.execute(db)
  if (!exists.rows[0]!.ok) return undefined
  const { rows } = await sql<{ hash: string }>`
    SELECT definition_hash AS hash FROM matview.views WHERE name = 'customer_totals'`.execute(db)
  return rows[0]?.hash
}

/**
 * Objects that belong to no catalogued view (a log, stage, capture function or trigger whose id
 * is not a view's, a rebuild's table not named by the catalog), views not ready, runs left
 * `running`. Empty after a recovery.
 */
export async function strays(db: Kysely<any>): Promise<string[]> {
  const { rows: views } = await sql<{ id: number; state: string; rebuild_id: number | null }>`
    SELECT id, state, rebuild_id FROM matview.views`.execute(db)
  const ids = new Set(views.map((v) => String(v.id)))
  const found: string[] = []
  for (const v of views)
    if (v.state !== 'ready' || v.rebuild_id !== null) found.push(`view ${v.id} ${v.state}`)
  const { rows: tables } = await sql<{ schema: string; name: string }>`
    SELECT n.nspname AS schema, c.relname AS name FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'matview')`.execute(db)
  const known = new Set([
    'public.customers',
    'public.orders',
    ...CHECKS.map((c) => `public.${c.view}`),
    ...CATALOG_TABLES.map((t) => `matview.${t}`),
  ])
  for (const t of tables) {
    const name = `${t.schema}.${t.name}`
    if (known.has(name)) continue
    const id = /^matview\.(?:log|inbox|stage)_(\d+)(?:_p?\d+)?$/.exec(name)?.[1]
    if (id === undefined || !ids.has(id)) found.push(`table ${name}`)
  }
  const { rows: functions } = await sql<{ name: string }>`
    SELECT p.proname AS name FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'matview' AND p.proname <> ALL(${[...CATALOG_FUNCTIONS]})`.execute(db)
  for (const f of functions) {
    const id = /^capture_(\d+)_\d+$/.exec(f.name)?.[1]
    if (id === undefined || !ids.has(id)) found.push(`function ${f.name}`)
  }
  const { rows: triggers } = await sql<{ name: string }>`
    SELECT tgname AS name FROM pg_catalog.pg_trigger WHERE NOT tgisinternal`.execute(db)
  for (const t of triggers) {
    const id = /^matview_(\d+)_\d+_/.exec(t.name)?.[1]
    if (id === undefined || !ids.has(id)) found.push(`trigger ${t.name}`)
  }
  const { rows: running } = await sql<{ view: string }>`
    SELECT view FROM matview.runs WHERE outcome = 'running'`.execute(db)
  for (const r of running) found.push(`run of ${r.view} still running`)
  return found
}

export async function expectViewsEqual(db: Kysely<any>, variant: number, context: string) {
  for (const check of CHECKS) {
    const diff = await queryDifferences(
      db,
      check.view,
      sql.raw(check.query(variant)) as RawBuilder<unknown>,
      check.columns,
    )
    expect(diff, `${check.view} after ${context}`).toEqual({ extra: [], missing: [] })
  }
}
