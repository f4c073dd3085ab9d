import { type Kysely, type RawBuilder, sql } from 'kysely'
import { keyIn } from './key-sql.js'
import { columnList } from './names.js'
import type { ViewRuntime } from './view-runtime.js'

/**
 * How a batch names its keys to the query. Per key (a LATERAL subquery per key) lets the key
 * reach every table joined on it as an index probe, but costs one execution of the query per
 * key: when a key has no index to reach (a view grouped by a column no source indexes) that
 * is one scan of the table per key, where `= ANY` scans it once for the whole batch.
 */
export const applyTuning: {
  /** Batches above this many keys always use `= ANY`. */
  perKeyMax: number
  /** Tests force one way to run both; undefined lets the planner's estimates decide. */
  force: 'each' | 'any' | undefined
} = { perKeyMax: 2000, force: undefined }

/**
 * The planner's costs mislead here: it prices every key's index pages as fresh random reads
 * and a hash of a whole table as cheap, so on the bench's 1,000-key batch it put per key at
 * 2.4× the cost of `= ANY`, which took 2.4× as long instead (189 ms against 80 ms). What it
 * does see reliably is a scan: a per-key plan that scans a table does it once per key. So per
 * key unless the scans in the one-key plan, once per key, cost more than the whole `= ANY`
 * plan, or the one-key plan alone, once per key, costs ten times as much.
 */
const PER_KEY_LIMIT = 10

/** Decisions are kept this long per view and batch size: table statistics change slowly. */
const REMEMBER_MS = 10 * 60_000
const remembered = new Map<string, { perKey: boolean; at: number }>()

/**
 * Whether to recompute `keys` key by key, from the plans of the query for one key and for all
 * of them with `= ANY` (see {@link PER_KEY_LIMIT}). Two EXPLAINs, once per view, definition and
 * batch size every ten minutes.
 */
export async function recomputePerKey(
  db: Kysely<any>,
  view: ViewRuntime,
  keys: string[][],
): Promise<boolean> {
  if (applyTuning.force) return applyTuning.force === 'each'
  if (keys.length > applyTuning.perKeyMax) return false
  if (keys.length === 1) return true
  const memo = `${view.catalog}.${view.id}:${view.definitionHash}:${sizeClass(keys.length)}`
  const known = remembered.get(memo)
  if (known && Date.now() - known.at < REMEMBER_MS) return known.perKey
  const selected = columnList(view.columns, 'q')
  const oneKey = sql.join(
    view.key.map((k, i) => sql`${sql.id('q', k)} = ${keys[0]![i]!}`),
    sql` AND `,
  )
  const each = await planCosts(
    db,
    sql`SELECT ${selected} FROM (${view.query}) AS q WHERE ${oneKey}`,
  )
  const any = await planCosts(
    db,
    sql`SELECT ${selected} FROM (${view.query}) AS q WHERE ${keyIn(view.key, 'q', keys)}`,
  )
  const n = keys.length
  const perKey = each.scans * n <= any.total && each.total * n <= any.total * PER_KEY_LIMIT
  remembered.set(memo, { perKey, at: Date.now() })
  return perKey
}

/** Batch sizes within a factor of two share a decision. */
function sizeClass(n: number): number {
  return Math.floor(Math.log2(n))
}

interface PlanNode {
  'Node Type': string
  'Total Cost': number
  Plans?: PlanNode[]
}

/** The plan's estimated total cost, and the part of it spent in sequential scans. */
async function planCosts(
  db: Kysely<any>,
  query: RawBuilder<unknown>,
): Promise<{ total: number; scans: number }> {
  const { rows } = await sql<{ 'QUERY PLAN': unknown }>`EXPLAIN (FORMAT JSON) ${query}`.execute(db)
  const plan = rows[0]?.['QUERY PLAN']
  const root = ((typeof plan === 'string' ? JSON.parse(plan) : plan) as [{ Plan: PlanNode }])[0]
    .Plan
  let scans = 0
  const walk = (node: PlanNode) => {
    if (node['Node Type'] === 'Seq Scan') scans += node['Total Cost']
    for (const child of node.Plans ?? []) walk(child)
  }
  walk(root)
  return { total: root['Total Cost'], scans }
}
