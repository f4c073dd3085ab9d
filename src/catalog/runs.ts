import { hostname } from 'node:os'
import { type Kysely, sql } from 'kysely'

export type RunOutcome = 'running' | 'done' | 'partial' | 'failed' | 'interrupted'

export interface RunCounts {
  inserted: number
  updated: number
  deleted: number
  batches: number
}

/** One row of the run history. */
export interface RunRecord extends RunCounts {
  id: number
  view: string
  startedAt: Date
  finishedAt: Date | null
  outcome: RunOutcome
  error: string | null
  host: string | null
  pid: number | null
}

/**
 * Records that a run started, so `status` shows it while it runs; returns its id. A caller
 * that holds the view's lock exclusively first closes the view's runs still marked running:
 * no process is left to finish them. One that holds it shared (`closeStale: false`, the
 * appliers of a partitioned view) must not: another applier's run is running now.
 */
export async function startRun(
  db: Kysely<any>,
  schema: string,
  view: string,
  options: { closeStale?: boolean } = {},
): Promise<number> {
  // One statement: `update` with nothing to do is a handful of round trips, each one counts.
  const stale =
    options.closeStale === false ? sql`` : sql`WITH stale AS (${closeStaleStatement(schema, view)})`
  const { rows } = await sql<{ id: string }>`
    ${stale}
    INSERT INTO ${sql.id(schema)}.runs (view, host, pid)
    VALUES (${view}, ${hostname()}, ${process.pid})
    RETURNING id
  `.execute(db)
  return Number(rows[0]!.id)
}

/**
 * Marks the view's runs still marked running as interrupted: they were killed, or lost their
 * connection, before they could record how they ended. Only under the view's exclusive lock.
 */
export async function closeStaleRuns(db: Kysely<any>, schema: string, view: string) {
  await closeStaleStatement(schema, view).execute(db)
}

function closeStaleStatement(schema: string, view: string) {
  return sql`
      UPDATE ${sql.id(schema)}.runs
      SET outcome = 'interrupted', finished_at = clock_timestamp(),
          error = coalesce(error, 'the process running it stopped before it could record the end')
      WHERE view = ${view} AND outcome = 'running'`
}

/**
 * Records that run `runId` applied `batches` batches to partition `partition` from `startedAt`
 * (the database's clock when the partition's lock was taken) until now, before the lock goes.
 */
export async function recordPartitionRun(
  db: Kysely<any>,
  schema: string,
  runId: number,
  partition: number,
  startedAt: string,
  batches: number,
): Promise<void> {
  await sql`
    INSERT INTO ${sql.id(schema)}.run_partitions (run_id, partition, started_at, batches)
    VALUES (${runId}, ${partition}, ${startedAt}::timestamptz, ${batches})`.execute(db)
}

/** Run rows deleted at most per finished run, so a long-neglected history costs no long statement. */
const PRUNE_LIMIT = 1000

/**
 * Records how a run ended and, in the same statement (no extra round trip for an `update` with
 * nothing to do), deletes up to {@link PRUNE_LIMIT} of the view's runs that started more than
 * `keepMs` ago, oldest first, found by the runs(view, started_at) index.
 */
export async function finishRun(
  db: Kysely<any>,
  schema: string,
  id: number,
  outcome: RunOutcome,
  counts: RunCounts,
  error?: string,
  keepMs?: number,
): Promise<void> {
  const prune =
    keepMs === undefined
      ? sql``
      : sql`WITH pruned AS (
      DELETE FROM ${sql.id(schema)}.runs
      WHERE id IN (
        SELECT old.id FROM ${sql.id(schema)}.runs AS old
        WHERE old.view = (SELECT view FROM ${sql.id(schema)}.runs WHERE id = ${id})
          AND old.started_at < now() - ${keepMs / 1000}::float8 * interval '1 second'
          AND old.id <> ${id}
        ORDER BY old.started_at LIMIT ${PRUNE_LIMIT}
      )
    )`
  await sql`
    ${prune}
    UPDATE ${sql.id(schema)}.runs
    SET finished_at = clock_timestamp(), outcome = ${outcome},
        rows_inserted = ${counts.inserted}, rows_updated = ${counts.updated},
        rows_deleted = ${counts.deleted}, batches = ${counts.batches}, error = ${error ?? null}
    WHERE id = ${id}
  `.execute(db)
}

/**
 * Folds an idle run (done, no batches, no error) into the view's previous run when that one was
 * idle too: the previous row's `finished_at` moves to now and run `id`'s row goes. A worker that
 * checks a view every 2 seconds thus keeps one row per idle stretch, not 43,000 a day. Returns
 * false, changing nothing, when the previous run did something (then record `id` as usual).
 * One statement; only under the view's exclusive lock (no other run of the view is running).
 */
export async function mergeIdleRun(db: Kysely<any>, schema: string, id: number): Promise<boolean> {
  const runs = sql`${sql.id(schema)}.runs`
  const { rows } = await sql<{ id: string }>`
    WITH previous AS (
      SELECT p.id, p.outcome, p.batches, p.error FROM ${runs} AS p
      WHERE p.view = (SELECT view FROM ${runs} WHERE id = ${id}) AND p.id <> ${id}
      ORDER BY p.started_at DESC, p.id DESC LIMIT 1
    ), merged AS (
      UPDATE ${runs} AS r SET finished_at = clock_timestamp()
      FROM previous
      WHERE r.id = previous.id AND previous.outcome = 'done' AND previous.batches = 0
        AND previous.error IS NULL
      RETURNING r.id
    )
    DELETE FROM ${runs} WHERE id = ${id} AND EXISTS (SELECT 1 FROM merged)
    RETURNING id
  `.execute(db)
  return rows.length > 0
}

/** The newest run of each named view. */
export async function lastRuns(
  db: Kysely<any>,
  schema: string,
  views: string[],
): Promise<Map<string, RunRecord>> {
  if (views.length === 0) return new Map()
  const { rows } = await sql<Record<string, unknown>>`
    SELECT DISTINCT ON (view) *
    FROM ${sql.id(schema)}.runs
    WHERE view = ANY(${views})
    ORDER BY view, started_at DESC, id DESC
  `.execute(db)
  return new Map(rows.map((row) => [String(row.view), toRunRecord(row)]))
}

/** The runs of one view, newest first. */
export async function listRuns(
  db: Kysely<any>,
  schema: string,
  view: string,
  limit: number,
): Promise<RunRecord[]> {
  const { rows } = await sql<Record<string, unknown>>`
    SELECT * FROM ${sql.id(schema)}.runs WHERE view = ${view}
    ORDER BY started_at DESC, id DESC LIMIT ${limit}
  `.execute(db)
  return rows.map(toRunRecord)
}

function toRunRecord(row: Record<string, unknown>): RunRecord {
  return {
    id: Number(row.id),
    view: String(row.view),
    startedAt: new Date(row.started_at as string),
    finishedAt: row.finished_at ? new Date(row.finished_at as string) : null,
    outcome: row.outcome as RunOutcome,
    inserted: Number(row.rows_inserted),
    updated: Number(row.rows_updated),
    deleted: Number(row.rows_deleted),
    batches: Number(row.batches),
    error: (row.error as string | null) ?? null,
    host: (row.host as string | null) ?? null,
    pid: row.pid === null || row.pid === undefined ? null : Number(row.pid),
  }
}
