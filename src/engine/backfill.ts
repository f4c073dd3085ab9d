import { type Kysely, sql } from 'kysely'
import type { StopReason } from '../runner/kind-runner.js'
import { batchError } from './apply-batch.js'
import { duplicateKeyError, nullKeyError } from './key-error.js'
import { keyAfter, keyColumns, keyRow, keysAsText } from './key-sql.js'
import { columnList, tableRef } from './names.js'
import { postgresError, SQLSTATE } from './postgres-errors.js'
import type { BackfillCheckpoint, ViewRuntime } from './view-runtime.js'

/** Source rows per step between two bounds; a range spans one or more steps. */
const ROWS_PER_STEP = 10_000
const MAX_STEPS = 256
/** The first range covers this fraction of the steps; later ranges follow the time it took. */
const FIRST_RANGE_DIVISOR = 8
const RANGE_TARGET_MS = 2000
const SAMPLE_ROWS = 30_000

export interface BackfillContext {
  conn: Kysely<any>
  batchSize: number
  shouldStop(): StopReason | undefined
  progress(done: number, total: number): void
  /** Called after each committed range with the rows it inserted. */
  onBatch(rows: number): void
  /** Where the checkpoint lives: by default the view's catalog row, which ends up `ready`. */
  checkpoint?: CheckpointStore
  /**
   * One range, one transaction, one snapshot: a view kept by rebuilds (its query is not
   * key-local) filled in ranges from several snapshots could mix rows of different moments.
   */
  oneSnapshot?: boolean
}

/**
 * Keeps a backfill's checkpoint. A rebuild fills a shadow table with its own store, so the live
 * view's row (state, checkpoint) is not touched until the swap.
 */
export interface CheckpointStore {
  save(db: Kysely<any>, checkpoint: BackfillCheckpoint): Promise<void>
  /** Every range is in. */
  finish(db: Kysely<any>): Promise<void>
}

/**
 * Fills a new view's target. The capture triggers are already installed, so writes made
 * meanwhile wait in the change log and are applied after. Each range is one transaction that
 * also moves the checkpoint, so an interrupted backfill resumes with the next range.
 *
 * Ranges are on the first key column, bounded on both sides (`k > lo AND k <= hi`) from a
 * sample of the source column that feeds it: the bounds reach the base tables' indexes, and no
 * range recomputes what another did, so the whole backfill costs about one `CREATE TABLE AS`.
 * A view whose first key column no source maps directly is filled by keyset pagination.
 */
export async function backfill(
  view: ViewRuntime,
  sources: { oid: string; column: string }[],
  ctx: BackfillContext,
): Promise<StopReason | undefined> {
  const store = ctx.checkpoint ?? viewCheckpoint(view)
  let checkpoint = view.backfillCheckpoint
  if (!checkpoint) {
    checkpoint = ctx.oneSnapshot
      ? { method: 'ranges', bounds: [], done: 0 }
      : await planBackfill(ctx.conn, view, sources)
    await store.save(ctx.conn, checkpoint)
  }
  const stop =
    checkpoint.method === 'ranges'
      ? await fillRanges(view, checkpoint, ctx)
      : await fillKeyset(view, checkpoint, ctx)
  if (stop) return stop
  await store.finish(ctx.conn)
  return undefined
}

type RangesCheckpoint = Extract<BackfillCheckpoint, { method: 'ranges' }>
type KeysetCheckpoint = Extract<BackfillCheckpoint, { method: 'keyset' }>

/**
 * Fills the ranges between `bounds`, several steps per transaction. How many is learnt as it
 * goes, aiming at {@link RANGE_TARGET_MS} per transaction: a range costs a pass over the pages
 * that hold its rows, and when a key's rows are spread over the whole table (orders by
 * customer, inserted over time) every range touches most pages, so many small ranges would cost
 * many passes. A few ranges of a couple of seconds keep transactions short and the total close
 * to one `CREATE TABLE AS`.
 */
async function fillRanges(
  view: ViewRuntime,
  start: RangesCheckpoint,
  ctx: BackfillContext,
): Promise<StopReason | undefined> {
  const total = start.bounds.length + 1
  let steps = Math.max(1, Math.round(total / FIRST_RANGE_DIVISOR))
  for (let done = start.done; done < total; ) {
    const stop = ctx.shouldStop()
    if (stop) return stop
    ctx.progress(done, total)
    const end = Math.min(total, done + steps)
    const lo = done > 0 ? start.bounds[done - 1] : undefined
    const hi = end < total ? start.bounds[end - 1] : undefined
    const began = performance.now()
    const rows = await ctx.conn.transaction().execute(async (trx) => {
      const inserted = await insertRange(trx, view, lo, hi)
      await (ctx.checkpoint ?? viewCheckpoint(view)).save(trx, { ...start, done: end })
      return inserted
    })
    const took = Math.max(1, performance.now() - began)
    ctx.onBatch(rows)
    steps = Math.max(1, Math.min(steps * 8, Math.round((steps * RANGE_TARGET_MS) / took)))
    done = end
  }
  ctx.progress(total, total)
  return undefined
}

async function fillKeyset(
  view: ViewRuntime,
  start: KeysetCheckpoint,
  ctx: BackfillContext,
): Promise<StopReason | undefined> {
  let checkpoint = start
  while (true) {
    const stop = ctx.shouldStop()
    if (stop) return stop
    ctx.progress(checkpoint.copied, Math.max(checkpoint.estimate, checkpoint.copied))
    const current = checkpoint
    const page = await ctx.conn.transaction().execute(async (trx) => {
      const inserted = await insertPage(trx, view, current.after, ctx.batchSize)
      checkpoint = {
        ...current,
        after: inserted.last ?? current.after,
        copied: current.copied + inserted.rows,
      }
      await (ctx.checkpoint ?? viewCheckpoint(view)).save(trx, checkpoint)
      return inserted
    })
    ctx.onBatch(page.rows)
    if (page.rows < ctx.batchSize) return undefined
  }
}

/** A new view's checkpoint: its catalog row, which becomes `ready` when the backfill ends. */
function viewCheckpoint(view: ViewRuntime): CheckpointStore {
  return {
    async save(db, checkpoint) {
      await sql`
        UPDATE ${sql.id(view.catalog, 'views')}
        SET backfill_checkpoint = ${JSON.stringify(checkpoint)}::jsonb, updated_at = now()
        WHERE name = ${view.name}`.execute(db)
    },
    async finish(db) {
      await sql`
        UPDATE ${sql.id(view.catalog, 'views')}
        SET state = 'ready', state_reason = NULL, backfill_checkpoint = NULL, updated_at = now()
        WHERE name = ${view.name}`.execute(db)
    },
  }
}

/** Splits the first key column's values into steps of about {@link ROWS_PER_STEP} source rows. */
async function planBackfill(
  db: Kysely<any>,
  view: ViewRuntime,
  sources: { oid: string; column: string }[],
): Promise<BackfillCheckpoint> {
  let best: (SourceSize & { column: string }) | undefined
  for (const source of sources) {
    const size = await sourceSize(db, source.oid)
    if (!best || size.rows > best.rows) best = { ...size, column: source.column }
  }
  if (!best) return { method: 'keyset', after: null, copied: 0, estimate: 0 }
  const ranges = Math.min(MAX_STEPS, Math.ceil(best.rows / ROWS_PER_STEP))
  if (ranges <= 1) return { method: 'ranges', bounds: [], done: 0 }
  if (best.pages <= ONE_PASS_PAGES && (await uncorrelated(db, best))) {
    // Every range of keys spread over the whole table reads the whole table: one range, one
    // pass (bench/RESULTS.md: three ranges took 3.1 s where one INSERT takes 1.9 s).
    return { method: 'ranges', bounds: [], done: 0 }
  }
  const fractions = Array.from({ length: ranges - 1 }, (_, i) => (i + 1) / ranges)
  const percent = Math.min(100, (100 * SAMPLE_ROWS) / best.rows)
  const column = sql.id('s', best.column)
  // The alias goes before TABLESAMPLE (`t TABLESAMPLE … AS s` is a syntax error): found by
  // test/engine/shapes.test.ts, as the small views never reach this path.
  const { rows } = await sql<{ bounds: unknown }>`
    SELECT (percentile_disc(${fractions}::float8[]) WITHIN GROUP (ORDER BY ${column}))::text[] AS bounds
    FROM ${tableRef(best)} AS s TABLESAMPLE SYSTEM (${percent}::float4)
    WHERE ${column} IS NOT NULL`.execute(db)
  const bounds = await inKeyOrder(db, view, parseTextArray(rows[0]?.bounds))
  return { method: 'ranges', bounds, done: 0 }
}

/**
 * The bounds, sampled in the source column's order, put in the order the ranges compare them
 * in: the first key column's, with its type and collation (an int column feeding a text key
 * sorts 9000 before 18000, the key '18000' before '9000'; unsorted, ranges overlap and a key
 * is inserted twice). The text of each bound becomes a value of the target's key column
 * through the target's row type; equal bounds (a skewed column) are kept once, as they would
 * make empty ranges. A bound the key's type cannot read leaves one range: slower, never wrong.
 */
async function inKeyOrder(db: Kysely<any>, view: ViewRuntime, bounds: string[]) {
  if (bounds.length === 0) return []
  const first = sql.id(view.key[0]!)
  try {
    const { rows } = await sql<{ bounds: unknown }>`
      SELECT array_agg(v::text ORDER BY v) AS bounds FROM (
        SELECT DISTINCT (pg_catalog.jsonb_populate_record(NULL::${tableRef(view.target)},
                           pg_catalog.jsonb_build_object(${view.key[0]!}::text, b))).${first} AS v
        FROM unnest(${bounds}::text[]) AS b
      ) AS typed`.execute(db)
    return parseTextArray(rows[0]?.bounds)
  } catch (error) {
    if (!postgresError(error)) throw error
    return []
  }
}

interface SourceSize {
  schema: string
  table: string
  rows: number
  pages: number
}

/**
 * Below this many pages (400 MB) a source whose key column has no physical order is filled in
 * one range: a pass over it takes a second or two, and a range costs a pass whatever its size.
 */
const ONE_PASS_PAGES = 50_000

/** Whether the column's values lie in no physical order (pg_stats.correlation near 0). */
async function uncorrelated(db: Kysely<any>, source: SourceSize & { column: string }) {
  const { rows } = await sql<{ correlation: number | null }>`
    SELECT correlation::float8 AS correlation FROM pg_catalog.pg_stats
    WHERE schemaname = ${source.schema} AND tablename = ${source.table}
      AND attname = ${source.column}`.execute(db)
  const correlation = rows[0]?.correlation
  return correlation !== undefined && correlation !== null && Math.abs(correlation) < 0.5
}

async function sourceSize(db: Kysely<any>, oid: string): Promise<SourceSize> {
  const { rows } = await sql<{ reltuples: number; pages: number; schema: string; table: string }>`
    SELECT c.reltuples::float8 AS reltuples, c.relpages::float8 AS pages, n.nspname AS schema,
           c.relname AS table
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = ${oid}::int8::oid`.execute(db)
  const row = rows[0]!
  const pages = Number(row.pages)
  if (Number(row.reltuples) >= 0)
    return { schema: row.schema, table: row.table, rows: Number(row.reltuples), pages }
  // Never analysed: count it (cheap next to the backfill itself).
  const { rows: counted } = await sql<{
    n: string
  }>`SELECT count(*) AS n FROM ${tableRef(row)}`.execute(db)
  return { schema: row.schema, table: row.table, rows: Number(counted[0]!.n), pages }
}

async function insertRange(
  db: Kysely<any>,
  view: ViewRuntime,
  lo: string | undefined,
  hi: string | undefined,
): Promise<number> {
  const first = sql.id('q', view.key[0]!)
  const conditions = [
    ...(lo !== undefined ? [sql`${first} > ${lo}`] : []),
    ...(hi !== undefined ? [sql`${first} <= ${hi}`] : []),
  ]
  const where = conditions.length > 0 ? sql`WHERE ${sql.join(conditions, sql` AND `)}` : sql``
  const cols = columnList(view.columns)
  try {
    const result = await sql`
      INSERT INTO ${tableRef(view.target)} (${cols})
      SELECT ${columnList(view.columns, 'q')} FROM (${view.query}) AS q ${where}`.execute(db)
    return Number(result.numAffectedRows ?? 0)
  } catch (error) {
    throw backfillError(view, error)
  }
}

async function insertPage(
  db: Kysely<any>,
  view: ViewRuntime,
  after: string[] | null,
  limit: number,
): Promise<{ rows: number; last: string[] | undefined }> {
  const cols = columnList(view.columns)
  const where = after ? sql`WHERE ${keyAfter(view.key, 'q', after)}` : sql``
  // DESC on every key column: `ORDER BY a, b DESC` took the last page row by `a` ascending, so
  // with a two-column key the cursor went back and the next page inserted a key twice
  // (test/engine/shapes.test.ts, UNION ALL view).
  const descending = sql.join(view.key.map((k) => sql`${sql.id('p', k)} DESC`))
  try {
    const { rows } = await sql<Record<string, unknown>>`
      WITH page AS (
        INSERT INTO ${tableRef(view.target)} (${cols})
        SELECT ${columnList(view.columns, 'q')} FROM (${view.query}) AS q ${where}
        ORDER BY ${keyColumns(view.key, 'q')} LIMIT ${limit}
        RETURNING ${keyColumns(view.key)}
      )
      SELECT (SELECT count(*) FROM page) AS n, last.*
      FROM (SELECT 1) AS one
      LEFT JOIN (SELECT ${keysAsText(view.key, 'p')} FROM page AS p
                 ORDER BY ${descending} LIMIT 1) AS last ON true`.execute(db)
    const row = rows[0]!
    const n = Number(row.n)
    return { rows: n, last: n > 0 ? keyRow(row, view.key.length) : undefined }
  } catch (error) {
    throw backfillError(view, error)
  }
}

function backfillError(view: ViewRuntime, error: unknown): Error {
  const pgError = postgresError(error)
  if (pgError?.code === SQLSTATE.uniqueViolation) {
    const key = /Key (\(.*\)=\(.*\)) already exists/.exec(pgError.detail ?? '')?.[1] ?? '(unknown)'
    return duplicateKeyError(view, key, error)
  }
  if (
    pgError?.code === SQLSTATE.notNullViolation &&
    pgError.column &&
    view.key.includes(pgError.column)
  ) {
    return nullKeyError(view, pgError.column, error)
  }
  return batchError(view, 'backfilling', error)
}

/** pg parses `text[]`; PGlite may hand back the literal. */
function parseTextArray(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String)
  if (typeof value !== 'string') return []
  throw new Error(`internal: unexpected array literal ${value}`)
}
