import { type Kysely, sql } from 'kysely'
import { inboxRows, pendingKeyScan } from './apply-batch.js'
import { keyColumns } from './key-sql.js'
import { tableRef } from './names.js'
import type { ViewRuntime } from './view-runtime.js'

/** How `update` applies a view's pending keys. */
export type Strategy = 'incremental' | 'rebuild' | 'auto'

export const STRATEGIES: readonly Strategy[] = ['incremental', 'rebuild', 'auto']

/**
 * The strategy a view's run uses: a view kept by rebuilds only (`strategy: 'rebuild'`) is
 * never applied by key, whatever the config or the command line ask.
 */
export function viewStrategy(
  view: { kind: string; strategy?: unknown },
  global: Strategy,
): Strategy {
  return view.kind === 'declarative' && view.strategy === 'rebuild' ? 'rebuild' : global
}

/** `auto`'s default share of a view's rows pending above which it rebuilds (bench/RESULTS.md). */
export const DEFAULT_REBUILD_SHARE = 0.15

/**
 * Below this many pending keys `auto` never rebuilds: a rebuild's fixed cost (a new table, log
 * and triggers, the swap) is worth a few thousand keys applied in batches.
 */
export const REBUILD_MIN_KEYS = 5_000

/**
 * An inbox this large (bytes on disk, with its TOAST) may hold enough keys for `auto` to
 * rebuild: about 8,000 bigint keys, and `auto` never rebuilds for fewer than 5,000.
 */
const INBOX_WORTH_COUNTING = 64 * 1024

/**
 * Whether a burst may wait in the view's inbox (its size when the runtime was loaded): then
 * `auto` decides before the first claim moves it into the log, as a rebuild throws the moved
 * keys away (the move of a 100,000-key burst took 0.56 s). Otherwise only a full first batch
 * can mean a large share of the view is pending.
 */
export function burstInInbox(view: ViewRuntime): boolean {
  return view.inboxBytes >= INBOX_WORTH_COUNTING
}

/** What `auto` decided, and the figures it decided on (for the run's notes). */
export interface StrategyChoice {
  rebuild: boolean
  /** Distinct pending keys, counted up to the point where the answer was clear. */
  pendingKeys: number
  /** The planner's estimate of the target's rows. */
  targetRows: number
}

/**
 * Incremental apply costs about the same per key whatever the view's size (an index probe per
 * key and table); a rebuild costs one pass of the whole query, as REFRESH does. So when the
 * pending keys are a large share of the view, the rebuild is cheaper: `share` is that share
 * (bench/RESULTS.md measures where the two meet). The keys are counted with the claim's loose
 * index scan, stopped as soon as the threshold is reached, so the count never costs more than a
 * small part of the work it decides about.
 */
export async function chooseRebuild(
  db: Kysely<any>,
  view: ViewRuntime,
  share: number,
): Promise<StrategyChoice> {
  const targetRows = await estimatedRows(db, view)
  const threshold = Math.max(REBUILD_MIN_KEYS, Math.ceil(share * targetRows))
  const pendingKeys = await countKeys(db, view, threshold)
  return { rebuild: pendingKeys >= threshold, pendingKeys, targetRows }
}

/**
 * The planner's row estimate for the target, never a count (that reads the table). A table
 * never analyzed (a new view's, a rebuild's) is estimated from column widths, off by 2× on the
 * bench's view: it is analyzed first, once, at a bounded cost (a sample of 30,000 rows), and
 * its statistics then serve every later estimate and the batches' plans.
 */
async function estimatedRows(db: Kysely<any>, view: ViewRuntime): Promise<number> {
  const target = tableRef(view.target)
  const { rows: stats } = await sql<{ reltuples: number }>`
    SELECT c.reltuples::float8 AS reltuples
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${view.target.schema} AND c.relname = ${view.target.table}`.execute(db)
  if (Number(stats[0]?.reltuples ?? -1) < 0) await sql`ANALYZE ${target}`.execute(db)
  const { rows } = await sql<{ 'QUERY PLAN': unknown }>`
    EXPLAIN (FORMAT JSON) SELECT 1 FROM ${target}`.execute(db)
  const plan = rows[0]?.['QUERY PLAN']
  const parsed = (typeof plan === 'string' ? JSON.parse(plan) : plan) as [
    { Plan: { 'Plan Rows': number } },
  ]
  return parsed[0].Plan['Plan Rows']
}

/**
 * Distinct keys in the view's log (counted up to `limit`) and its inbox (all of it: the
 * strategy is chosen before a burst in the inbox is moved; an empty inbox costs nothing).
 */
async function countKeys(db: Kysely<any>, view: ViewRuntime, limit: number): Promise<number> {
  const keys = keyColumns(view.key)
  const { rows } = await sql<{ n: string }>`
    ${pendingKeyScan(view, limit)}
    SELECT count(*) AS n FROM (
      SELECT ${keys} FROM k UNION SELECT ${keys} FROM ${inboxRows(view)} AS i
    ) AS pending`.execute(db)
  return Number(rows[0]!.n)
}
