import { type Kysely, type RawBuilder, sql } from 'kysely'
import type { StopReason } from '../runner/kind-runner.js'
import { applyKeys, batchError, inboxRows } from './apply-batch.js'
import { keyAfter, keyColumns, keyRow, keysAsText } from './key-sql.js'
import { columnList, tableRef } from './names.js'
import type { ViewRuntime } from './view-runtime.js'

/** How a key of the target differs from the query. */
export type DriftKind = 'missing' | 'extra' | 'different'

/** Keys of one kind of drift: how many, and the first few (column name to value as text). */
export interface DriftKeys {
  count: number
  first: Record<string, string>[]
}

/** What comparing a ready view's target with its query found. */
export interface Comparison {
  missing: DriftKeys
  extra: DriftKeys
  different: DriftKeys
  /** Keys that differ but wait in the change log: the next `update` applies them, not drift. */
  pending: number
  /** Target rows compared. */
  rows: number
  /** Read-only statements it took (one per key range). */
  ranges: number
  /** Drifted keys put in the change log and applied (`repair`). */
  repaired: number
}

export interface CompareContext {
  /** First keys kept per kind of drift, for the report. */
  sample: number
  /** Put drifted keys in the change log and apply them (the caller holds the view's lock). */
  repair: boolean
  batchSize: number
  /** Target keys per range, fixed; by default ranges are sized to take about a second each. */
  rangeKeys?: number
  shouldStop(): StopReason | undefined
  progress(done: number, total: number): void
}

/** Keys in the first range; later ranges follow the time a range took. */
const FIRST_RANGE_KEYS = 1000
const MAX_RANGE_KEYS = 200_000
const RANGE_TARGET_MS = 1000

/**
 * Compares a view's target with its query (DESIGN, Verify), in ranges of the target's primary
 * key: each range is one read-only statement that computes the query for that range only (the
 * bounds are quals on the key columns, pushed down to the base tables like a batch's) and
 * compares it with the target's rows both ways, so a large view needs no huge query and holds
 * no lock for long. The ranges are cut by keyset pagination on the target's primary key and
 * the first and last are open, so a key the query returns and the target lacks is found
 * wherever it falls. Rows are compared by their binary image, as a batch does (json or point
 * columns have no equality). A key that waits in the change log (or is staged) in the same
 * snapshot is pending, not drift.
 */
export async function compareView(
  db: Kysely<any>,
  view: ViewRuntime,
  ctx: CompareContext,
): Promise<Comparison & { stop?: StopReason }> {
  const found: Comparison = {
    missing: { count: 0, first: [] },
    extra: { count: 0, first: [] },
    different: { count: 0, first: [] },
    pending: 0,
    rows: 0,
    ranges: 0,
    repaired: 0,
  }
  const total = await estimateRows(db, view)
  let keysPerRange = ctx.rangeKeys ?? FIRST_RANGE_KEYS
  let lo: string[] | undefined
  while (true) {
    const stop = ctx.shouldStop()
    if (stop) return { ...found, stop }
    ctx.progress(found.rows, Math.max(total, found.rows))
    const began = performance.now()
    // Read-only, and without JIT: a range's estimated cost often passes `jit_above_cost`, and
    // compiling took longer than the statement itself (bench, verify phase: 540 ms with JIT, 130
    // ms without, on a connection the application handed over with its own settings).
    const { hi, range } = await db.transaction().execute(async (trx) => {
      await sql`SET TRANSACTION READ ONLY`.execute(trx)
      await sql`SELECT pg_catalog.set_config('jit', 'off', true)`.execute(trx)
      const hi = await rangeEnd(trx, view, lo, keysPerRange)
      return { hi, range: await compareRange(trx, view, lo, hi) }
    })
    found.ranges++
    found.rows += range.rows
    const drifted: string[][] = []
    for (const row of range.keys) {
      if (row.pending) {
        found.pending++
        continue
      }
      const kept = found[row.kind]
      kept.count++
      if (kept.first.length < ctx.sample)
        kept.first.push(Object.fromEntries(view.key.map((k, i) => [k, row.key[i]!])))
      drifted.push(row.key)
    }
    if (ctx.repair && drifted.length > 0) found.repaired += await repair(db, view, drifted, ctx)
    if (!hi) break
    lo = hi
    if (ctx.rangeKeys) continue
    const took = Math.max(1, performance.now() - began)
    keysPerRange = Math.max(
      100,
      Math.min(
        MAX_RANGE_KEYS,
        keysPerRange * 8,
        Math.round((keysPerRange * RANGE_TARGET_MS) / took),
      ),
    )
  }
  ctx.progress(found.rows, found.rows)
  return found
}

/** The target's rows by the catalog's estimate, or counted when never analysed (progress only). */
async function estimateRows(db: Kysely<any>, view: ViewRuntime): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    SELECT c.reltuples::float8 AS n FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
    WHERE s.nspname = ${view.target.schema} AND c.relname = ${view.target.table}`.execute(db)
  const estimate = Number(rows[0]?.n ?? -1)
  if (estimate >= 0) return estimate
  const { rows: counted } = await sql<{
    n: string
  }>`SELECT count(*) AS n FROM ${tableRef(view.target)}`.execute(db)
  return Number(counted[0]!.n)
}

/** The key `n` rows after `lo` in the target's primary key, or undefined past the last row. */
async function rangeEnd(
  db: Kysely<any>,
  view: ViewRuntime,
  lo: string[] | undefined,
  n: number,
): Promise<string[] | undefined> {
  const where = lo ? sql`WHERE ${keyAfter(view.key, 't', lo)}` : sql``
  const { rows } = await sql<Record<string, unknown>>`
    SELECT ${keysAsText(view.key, 't')} FROM ${tableRef(view.target)} AS t ${where}
    ORDER BY ${keyColumns(view.key, 't')} OFFSET ${n - 1} LIMIT 1`.execute(db)
  return rows[0] ? keyRow(rows[0], view.key.length) : undefined
}

/** `lo < key <= hi` on `alias`'s key columns (either side open when undefined). */
function inRange(
  key: readonly string[],
  alias: string,
  lo: string[] | undefined,
  hi: string[] | undefined,
): RawBuilder<unknown> {
  const parts: RawBuilder<unknown>[] = []
  if (lo) parts.push(keyAfter(key, alias, lo))
  if (hi) {
    parts.push(
      key.length === 1
        ? sql`${sql.id(alias, key[0]!)} <= ${hi[0]!}`
        : sql`(${keyColumns(key, alias)}) <= (${sql.join(hi.map((v) => sql`${v}`))})`,
    )
  }
  // A row comparison reaches no index on its own: the first column's bounds do.
  if (key.length > 1) {
    const first = sql.id(alias, key[0]!)
    if (lo) parts.push(sql`${first} >= ${lo[0]!}`)
    if (hi) parts.push(sql`${first} <= ${hi[0]!}`)
  }
  return parts.length > 0 ? sql.join(parts, sql` AND `) : sql`true`
}

interface RangeKey {
  kind: DriftKind
  key: string[]
  pending: boolean
}

async function compareRange(
  db: Kysely<any>,
  view: ViewRuntime,
  lo: string[] | undefined,
  hi: string[] | undefined,
): Promise<{ rows: number; keys: RangeKey[] }> {
  const cols = columnList(view.columns)
  const same = (a: string, b: string) =>
    sql.join(
      view.key.map((k) => sql`${sql.id(a, k)} = ${sql.id(b, k)}`),
      sql` AND `,
    )
  // Keys waiting to be applied, read in the same snapshot as the target and the query.
  const pendingSources = [
    sql`SELECT ${keyColumns(view.key, 'l')} FROM ${tableRef(view.objects.log)} AS l WHERE ${inRange(view.key, 'l', lo, hi)}`,
    sql`SELECT ${keyColumns(view.key, 'l')} FROM ${inboxRows(view)} AS l WHERE ${inRange(view.key, 'l', lo, hi)}`,
    ...view.staged.map(
      (source) => sql`
        SELECT ${keyColumns(view.key, 'm')} FROM (
          WITH changed AS (
            SELECT r.* FROM ${tableRef(source.stage)} AS s
            CROSS JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::${tableRef(source.table)}, s.row) AS r
          )
          SELECT * FROM (${source.mapping}) AS m
        ) AS m`,
    ),
  ]
  try {
    const { rows } = await sql<Record<string, unknown>>`
      WITH t AS MATERIALIZED (
        SELECT ${cols} FROM ${tableRef(view.target)} AS t WHERE ${inRange(view.key, 't', lo, hi)}
      ), q AS MATERIALIZED (
        SELECT ${columnList(view.columns, 'q')} FROM (${view.query}) AS q
        WHERE ${inRange(view.key, 'q', lo, hi)}
      ), pending AS (
        ${sql.join(pendingSources, sql` UNION ALL `)}
      ), drift AS (
        SELECT 'missing' AS kind, ${keyColumns(view.key, 'q')} FROM q
        WHERE NOT EXISTS (SELECT 1 FROM t WHERE ${same('t', 'q')})
        UNION ALL
        SELECT 'extra', ${keyColumns(view.key, 't')} FROM t
        WHERE NOT EXISTS (SELECT 1 FROM q WHERE ${same('q', 't')})
        UNION ALL
        SELECT 'different', ${keyColumns(view.key, 't')} FROM t JOIN q ON ${same('t', 'q')}
        WHERE NOT (t OPERATOR(pg_catalog.*=) q)
      )
      SELECT (SELECT count(*) FROM t) AS rows, d.*
      FROM (SELECT 1) AS one LEFT JOIN (
        SELECT d.kind, EXISTS (SELECT 1 FROM pending AS p WHERE ${same('p', 'd')}) AS pending,
               ${keysAsText(view.key, 'd')}
        FROM drift AS d
      ) AS d ON true`.execute(db)
    // One row even when nothing differs, for the count; its kind is then NULL.
    return {
      rows: Number(rows[0]!.rows),
      keys: rows
        .filter((row) => row.kind != null)
        .map((row) => ({
          kind: row.kind as DriftKind,
          key: keyRow(row, view.key.length),
          pending: row.pending === true,
        })),
    }
  } catch (error) {
    throw batchError(view, 'verifying', error)
  }
}

/**
 * Puts drifted keys in the change log, then applies them by the normal batch path: the log
 * rows commit first, so a repair that stops half-way leaves the rest for the next `update`.
 */
async function repair(
  db: Kysely<any>,
  view: ViewRuntime,
  keys: string[][],
  ctx: CompareContext,
): Promise<number> {
  // Key values travel as text; the log's own row type reads each back with its column's type.
  const rows = keys.map((row) => Object.fromEntries(view.key.map((k, i) => [k, row[i]!])))
  await sql`
    INSERT INTO ${tableRef(view.objects.log)} (${keyColumns(view.key)})
    SELECT ${keyColumns(view.key, 'r')}
    FROM pg_catalog.jsonb_populate_recordset(NULL::${tableRef(view.objects.log)}, ${JSON.stringify(rows)}::jsonb) AS r`.execute(
    db,
  )
  let applied = 0
  for (let i = 0; i < keys.length; i += ctx.batchSize) {
    const chunk = keys.slice(i, i + ctx.batchSize)
    await applyKeys(db, view, chunk)
    applied += chunk.length
  }
  return applied
}
