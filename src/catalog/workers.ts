import { hostname } from 'node:os'
import { type Kysely, sql } from 'kysely'

/** A worker's row in the catalog, as `status` shows it. */
export interface WorkerRecord {
  id: number
  host: string
  pid: number
  startedAt: Date
  heartbeatAt: Date
  /** The views it is running now, or null when idle. */
  doing: string | null
  /** No heartbeat for longer than the stale limit: the process is gone. */
  dead: boolean
}

/** Registers this process as a worker; returns its id. */
export async function registerWorker(db: Kysely<any>, schema: string): Promise<number> {
  const { rows } = await sql<{ id: string }>`
    INSERT INTO ${sql.id(schema)}.workers (host, pid) VALUES (${hostname()}, ${process.pid})
    RETURNING id`.execute(db)
  return Number(rows[0]!.id)
}

/** Records that the worker is alive and what it runs; false when its row was cleaned away. */
export async function heartbeat(
  db: Kysely<any>,
  schema: string,
  id: number,
  doing: string | null,
): Promise<boolean> {
  const result = await sql`
    UPDATE ${sql.id(schema)}.workers SET heartbeat_at = now(), doing = ${doing}
    WHERE id = ${id}`.execute(db)
  return Number(result.numAffectedRows ?? 0) > 0
}

export async function deregisterWorker(db: Kysely<any>, schema: string, id: number): Promise<void> {
  await sql`DELETE FROM ${sql.id(schema)}.workers WHERE id = ${id}`.execute(db)
}

/** Deletes the rows of workers whose heartbeat stopped more than `staleSeconds` ago. */
export async function cleanDeadWorkers(
  db: Kysely<any>,
  schema: string,
  staleSeconds: number,
): Promise<number> {
  const result = await sql`
    DELETE FROM ${sql.id(schema)}.workers
    WHERE heartbeat_at < now() - make_interval(secs => ${staleSeconds})`.execute(db)
  return Number(result.numAffectedRows ?? 0)
}

/** Every registered worker, oldest first; `dead` when silent for over `staleSeconds`. */
export async function listWorkers(
  db: Kysely<any>,
  schema: string,
  staleSeconds: number,
): Promise<WorkerRecord[]> {
  const { rows } = await sql<Record<string, unknown>>`
    SELECT *, heartbeat_at < now() - make_interval(secs => ${staleSeconds}) AS dead
    FROM ${sql.id(schema)}.workers ORDER BY started_at, id`.execute(db)
  return rows.map((row) => ({
    id: Number(row.id),
    host: String(row.host),
    pid: Number(row.pid),
    startedAt: new Date(row.started_at as string),
    heartbeatAt: new Date(row.heartbeat_at as string),
    doing: (row.doing as string | null) ?? null,
    dead: row.dead === true,
  }))
}
