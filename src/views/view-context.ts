import type { Kysely, sql } from 'kysely'
import type { Logger } from '../runner/logger.js'

/** What a hand-written view's hooks receive. */
export interface ViewContext {
  /** The view's name. */
  readonly view: string
  /**
   * The database: inside `doInsert/doUpdate/doDelete` this is the batch's transaction (its
   * writes commit together when the hook returns, and roll back if it throws); in `needsX`
   * it is the runner's connection.
   */
  readonly db: Kysely<any>
  /** Kysely's `sql` tag, for raw SQL with parameters. */
  readonly sql: typeof sql
  /** The most rows a `doX` call should handle. */
  readonly batchSize: number
  /** Aborted when the time budget is spent or the process is asked to stop. */
  readonly signal: AbortSignal
  readonly logger: Logger
}
