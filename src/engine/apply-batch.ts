import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, type RawBuilder, sql } from 'kysely'
import { ViewRunError } from '../errors/matview-error.js'
import { duplicateKeyError } from './key-error.js'
import { describeKey, keyAfter, keyColumns, keyIn, keyRow, keysAsText } from './key-sql.js'
import { columnList, tableRef, viewObjects } from './names.js'
import { postgresError, SQLSTATE } from './postgres-errors.js'
import { recomputePerKey } from './recompute-choice.js'
import type { StagedSource, ViewRuntime } from './view-runtime.js'

export interface BatchCounts {
  inserted: number
  updated: number
  deleted: number
  /** Change-log rows the batch deleted (several per key after a burst). */
  cleared?: number
}

/**
 * Up to `limit` distinct pending keys, in key order after `after` (a cursor that makes a long
 * drain visit every key before it comes back to a hot one). First moves what the capture
 * appended to the inbox into the log (counted in `tally`); then reads only: the apply statement
 * deletes their log rows.
 *
 * A loose index scan: each step asks the log's index for the next key after the previous one,
 * so the cost is one index probe per key, whatever the log's size, its duplicates or its
 * statistics. (`SELECT DISTINCT … LIMIT` was planned as a scan of the whole log: the log
 * churns, its statistics lag, and a hot key logged a thousand times was read a thousand times.)
 */
export async function claimKeys(
  db: Kysely<any>,
  view: ViewRuntime,
  limit: number,
  after: string[] | undefined,
  tally?: { moved: number },
): Promise<string[][]> {
  const moved = await moveInbox(db, view)
  if (tally) tally.moved += moved
  const { rows } = await sql<Record<string, unknown>>`
    ${pendingKeyScan(view, limit, after)}
    SELECT ${keysAsText(view.key, 'k')} FROM k`.execute(db)
  return rows.map((row) => keyRow(row, view.key.length))
}

/**
 * Moves the keys the capture triggers appended to the view's inbox into its log, each key once
 * (with its oldest time), in one statement of its own. Only committed rows move, and they are in
 * the log before the claim that follows reads it, so a batch still recomputes every key after
 * the writes that logged it committed (DESIGN, correctness). Writers pay for one unindexed row
 * per statement; the log's index is kept by this one statement per batch instead of by every
 * write. Runners of a partitioned view move one at a time (a transaction-level advisory lock):
 * one that finds another moving waits for it to commit, so its claim then sees the keys the other
 * moved (a runner that skipped the move found its partitions empty and stopped while the other
 * was still moving a burst), and then moves what arrived since. Returns the keys moved (with
 * their duplicates). A view created before the inbox existed has none: its capture writes the
 * log itself.
 */
async function moveInbox(db: Kysely<any>, view: ViewRuntime): Promise<number> {
  if (!view.hasInbox) return 0
  // The whole view's log: a partition's runtime names its own partition as the log, but a
  // moved key may belong to any partition (the parent routes it).
  const whole = viewObjects(view.catalog, view.objects.id)
  const keys = keyColumns(view.key)
  const { rows } = await retryTransient(() =>
    sql<{ moved: string }>`
      WITH moved AS (
        DELETE FROM ${tableRef(whole.inbox)}
        WHERE (SELECT true FROM ${inboxMoveLock(view)})
        RETURNING ${keys}, matview_logged_at
      ), captured AS (
        SELECT ${keyColumns(view.key, 'u')}, m.matview_logged_at
        FROM moved AS m CROSS JOIN LATERAL ${inboxKeys(view, 'm')}
      ), logged AS (
        INSERT INTO ${tableRef(whole.log)} (${keys}, matview_logged_at)
        SELECT ${keys}, min(matview_logged_at) FROM captured GROUP BY ${keys}
      )
      SELECT (SELECT count(*) FROM captured) AS moved`.execute(db),
  ).catch((error) => {
    throw batchError(view, 'moving the captured keys into the change log', error)
  })
  return Number(rows[0]!.moved)
}

/**
 * The transaction-level lock a move of the view's inbox takes (`SELECT … FROM` it): whoever
 * holds it knows no move commits meanwhile.
 */
export function inboxMoveLock(view: ViewRuntime): RawBuilder<unknown> {
  const lockKey = `${view.catalog}:inbox:${view.objects.id}`
  return sql`pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(${lockKey}, 0))`
}

/**
 * The keys of one inbox row (alias `alias`) as rows `u(key columns)`, the key columns' arrays
 * zipped. For `CROSS JOIN LATERAL` after the inbox. (`ROWS FROM`: a schema-qualified `unnest`
 * takes one array only.)
 */
export function inboxKeys(view: ViewRuntime, alias: string): RawBuilder<unknown> {
  const arrays = view.key.map((k) => sql`pg_catalog.unnest(${sql.id(alias, k)})`)
  return sql`ROWS FROM (${sql.join(arrays)}) AS u(${keyColumns(view.key)})`
}

/** Every key waiting in the view's inbox, with its time, as a subquery (empty without one). */
export function inboxRows(view: ViewRuntime): RawBuilder<unknown> {
  if (!view.hasInbox)
    return sql`(SELECT ${keyColumns(view.key, 'l')}, l.matview_logged_at FROM ${tableRef(view.objects.log)} AS l WHERE false)`
  return sql`(SELECT ${keyColumns(view.key, 'u')}, i.matview_logged_at
    FROM ${tableRef(view.objects.inbox)} AS i CROSS JOIN LATERAL ${inboxKeys(view, 'i')})`
}

/** `WITH RECURSIVE k AS (…)`: up to `limit` distinct keys of the log after `after`, in order. */
export function pendingKeyScan(
  view: ViewRuntime,
  limit: number,
  after?: string[] | undefined,
): RawBuilder<unknown> {
  const log = tableRef(view.objects.log)
  const cols = keyColumns(view.key, 'l')
  const start = after ? sql`WHERE ${keyAfter(view.key, 'l', after)}` : sql``
  const next = sql`WHERE (${cols}) > (${keyColumns(view.key, 'k')})`
  return sql`
    WITH RECURSIVE k AS (
      (SELECT ${cols}, 1 AS n FROM ${log} AS l ${start} ORDER BY ${cols} LIMIT 1)
      UNION ALL
      SELECT ${keyColumns(view.key, 'step')}, k.n + 1
      FROM k CROSS JOIN LATERAL (
        SELECT ${cols} FROM ${log} AS l ${next} ORDER BY ${cols} LIMIT 1
      ) AS step
      WHERE k.n < ${limit}
    )`
}

/**
 * Applies claimed keys in one statement, so in one transaction and one snapshot: delete every
 * log row of the keys, recompute them from the query with the key restriction on the query's
 * own columns (which PostgreSQL pushes down to the base tables), upsert the rows that differ
 * and delete the keys the query no longer returns. The log rows it deletes were committed
 * before its snapshot, so the recompute sees their writes (DESIGN, correctness); a write
 * committed later keeps its log row for the next batch. If anything fails, all of it rolls
 * back and the keys stay in the log.
 */
export async function applyKeys(
  db: Kysely<any>,
  view: ViewRuntime,
  keys: string[][],
): Promise<BatchCounts> {
  const perKey = await recomputePerKey(db, view, keys)
  const target = tableRef(view.target)
  const cols = columnList(view.columns)
  const values = view.columns.filter((c) => !view.key.includes(c))
  // Rows are compared by their binary image (`*=`, as REFRESH MATERIALIZED VIEW CONCURRENTLY
  // does), not with `IS DISTINCT FROM` on the columns: that needs an equality operator for every
  // column type, and json, xml or point have none, so a view with a json column failed every
  // batch (test/engine/shapes.test.ts). Same image means same value, so no change is missed;
  // NULLs compare equal to NULLs. The target has exactly the query's columns, so whole rows.
  // A key the query returns twice must fail the batch, never be stored as whichever row came
  // last: the conflict's WHERE lets a duplicated key through, so its second row "affects the row
  // a second time" and PostgreSQL raises, even when the first row equals the stored one.
  const duplicated = sql`EXISTS (SELECT 1 FROM dups AS d WHERE ${sql.join(
    view.key.map((k) => sql`d.${sql.id(k)} = excluded.${sql.id(k)}`),
    sql` AND `,
  )})`
  const assignments =
    values.length === 0
      ? [sql`${sql.id(view.key[0]!)} = excluded.${sql.id(view.key[0]!)}`]
      : values.map((c) => sql`${sql.id(c)} = excluded.${sql.id(c)}`)
  const changed = values.length === 0 ? sql`false` : sql`NOT (t OPERATOR(pg_catalog.*=) excluded)`
  const onConflict = sql`DO UPDATE SET ${sql.join(assignments)} WHERE ${changed} OR ${duplicated}`
  const sameKey = (a: string, b: string) =>
    sql.join(
      view.key.map((k) => sql`${sql.id(a, k)} = ${sql.id(b, k)}`),
      sql` AND `,
    )
  const log = tableRef(view.objects.log)
  const selected = columnList(view.columns, 'q')
  // Two ways to name the batch's keys to the query; both recompute exactly the keys whose log
  // rows the statement deletes (cleared = recomputed = removed), which is all correctness needs.
  const keyed = perKey
    ? {
        // Per key: each claimed key is an outer value of a LATERAL subquery, so PostgreSQL
        // pushes `q.key = k.key` into the query and derives it for every table joined on the
        // key (an index probe on customers as well as orders). `= ANY(array)` reaches only the
        // table whose column it names; the others were scanned whole every batch
        // (bench/RESULTS.md). OFFSET 0 keeps the subquery from being flattened into a join.
        // The key values come typed from the log's own columns, and are exact tuples.
        cleared: sql`DELETE FROM ${log} AS l WHERE ${keyIn(view.key, 'l', keys)} RETURNING ${keyColumns(view.key, 'l')}`,
        claimed: sql`, claimed AS MATERIALIZED (SELECT DISTINCT ${keyColumns(view.key)} FROM cleared)`,
        fresh: sql`SELECT q.* FROM claimed AS k CROSS JOIN LATERAL (
          SELECT ${selected} FROM (${view.query}) AS q WHERE ${sameKey('q', 'k')} OFFSET 0
        ) AS q`,
        removed: sql`DELETE FROM ${target} AS t USING claimed AS k
        WHERE ${sameKey('t', 'k')} AND NOT EXISTS (SELECT 1 FROM fresh AS f WHERE ${sameKey('f', 't')})`,
      }
    : {
        // Many keys: one `= ANY` per key column, which PostgreSQL turns into index scans of the
        // tables that hold them (or a scan when the batch touches most of a table anyway).
        cleared: sql`DELETE FROM ${log} AS l WHERE ${keyIn(view.key, 'l', keys)} RETURNING 1`,
        claimed: sql``,
        fresh: sql`SELECT ${selected} FROM (${view.query}) AS q WHERE ${keyIn(view.key, 'q', keys)}`,
        removed: sql`DELETE FROM ${target} AS t
        WHERE ${keyIn(view.key, 't', keys)} AND NOT EXISTS (SELECT 1 FROM fresh AS f WHERE ${sameKey('f', 't')})`,
      }
  try {
    const { rows } = await retryTransient(() =>
      sql<Record<string, string>>`
      WITH cleared AS (
        ${keyed.cleared}
      )${keyed.claimed}, fresh AS MATERIALIZED (
        ${keyed.fresh}
      ), dups AS (
        SELECT ${keyColumns(view.key)} FROM fresh GROUP BY ${keyColumns(view.key)} HAVING count(*) > 1
      ), upserted AS (
        INSERT INTO ${target} AS t (${cols}) SELECT ${cols} FROM fresh
        ON CONFLICT (${keyColumns(view.key)}) ${onConflict}
        RETURNING (t.xmax = 0) AS inserted
      ), removed AS (
        ${keyed.removed}
        RETURNING 1
      )
      SELECT (SELECT count(*) FROM cleared) AS cleared,
             (SELECT count(*) FROM upserted WHERE inserted) AS inserted,
             (SELECT count(*) FROM upserted WHERE NOT inserted) AS updated,
             (SELECT count(*) FROM removed) AS deleted`.execute(db),
    )
    const row = rows[0]!
    return {
      inserted: Number(row.inserted),
      updated: Number(row.updated),
      deleted: Number(row.deleted),
      cleared: Number(row.cleared),
    }
  } catch (error) {
    if (postgresError(error)?.code === SQLSTATE.cardinalityViolation) {
      // Not findable inside a transaction the failure aborted (set-aside's last try): then the
      // error stays the cardinality violation, which is still the keys' data.
      const duplicate = await findDuplicateKey(db, view, keys).catch(() => undefined)
      if (duplicate) throw duplicateKeyError(view, describeKey(view.key, duplicate), error)
    }
    throw batchError(view, 'applying a batch', error)
  }
}

async function findDuplicateKey(
  db: Kysely<any>,
  view: ViewRuntime,
  keys: string[][],
): Promise<string[] | undefined> {
  const { rows } = await sql<Record<string, unknown>>`
    SELECT ${keysAsText(view.key, 'q')} FROM (${view.query}) AS q WHERE ${keyIn(view.key, 'q', keys)}
    GROUP BY ${keyColumns(view.key, 'q')} HAVING count(*) > 1 LIMIT 1`.execute(db)
  return rows[0] ? keyRow(rows[0], view.key.length) : undefined
}

/**
 * Errors the same statement can get past on a second try: another session held a lock past
 * `lock_timeout`, the statement ran past `statement_timeout`, a deadlock or serialization
 * failure. A batch is one statement, so a failed try rolled back whole and left its keys in the
 * log: trying again is safe. After the last try the error fails the view as any other.
 */
const TRANSIENT = new Set(['55P03', '57014', '40P01', '40001'])
const TRIES = 3
const RETRY_BASE_MS = 250

export async function retryTransient<T>(statement: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await statement()
    } catch (error) {
      if (attempt >= TRIES || !TRANSIENT.has(postgresError(error)?.code ?? '')) throw error
      // Exponential with jitter, so two runners that collided do not collide again.
      await sleep(RETRY_BASE_MS * 2 ** (attempt - 1) * (0.5 + Math.random() / 2))
    }
  }
}

/** A failed statement of a batch, as one line naming the view and what it was doing. */
export function batchError(view: { name: string }, doing: string, error: unknown): Error {
  const pgError = postgresError(error)
  if (!pgError) return error instanceof Error ? error : new Error(String(error))
  return new ViewRunError(view.name, `${doing} failed: ${pgError.message}`, { cause: error })
}

/**
 * Maps up to `limit` staged rows of a source whose mapping is a query: deletes them and logs
 * the keys the mapping gives for them, in one statement. It runs after their writers
 * committed, so the mapping sees everything those writers saw (DESIGN, Capture).
 */
export async function resolveStaged(
  db: Kysely<any>,
  view: ViewRuntime,
  source: StagedSource,
  limit: number,
): Promise<number> {
  const stage = tableRef(source.stage)
  const notNull = sql.join(
    view.key.map((k) => sql`m.${sql.id(k)} IS NOT NULL`),
    sql` AND `,
  )
  try {
    const { rows } = await retryTransient(() =>
      sql<{ staged: string }>`
      WITH taken AS (
        DELETE FROM ${stage}
        WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${stage} LIMIT ${limit}))
        RETURNING row, matview_logged_at
      ), changed AS (
        SELECT r.* FROM taken AS t
        CROSS JOIN LATERAL pg_catalog.jsonb_populate_record(NULL::${tableRef(source.table)}, t.row) AS r
      ), logged AS (
        INSERT INTO ${tableRef(view.objects.log)} (${keyColumns(view.key)}, matview_logged_at)
        SELECT DISTINCT ${keyColumns(view.key, 'm')}, (SELECT min(matview_logged_at) FROM taken)
        FROM (${source.mapping}) AS m WHERE ${notNull}
        RETURNING 1
      )
      SELECT (SELECT count(*) FROM taken) AS staged, (SELECT count(*) FROM logged) AS logged`.execute(
        db,
      ),
    )
    return Number(rows[0]!.staged)
  } catch (error) {
    throw batchError(view, `mapping the changed rows of source "${source.name}"`, error)
  }
}
