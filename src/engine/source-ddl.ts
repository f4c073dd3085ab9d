import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, sql } from 'kysely'
import { ViewRunError } from '../errors/matview-error.js'
import { markOwnDdl } from './capture-ddl.js'
import { postgresError } from './postgres-errors.js'

/**
 * The longest one attempt of matview's DDL on a source table waits for the table's lock. Below
 * PostgreSQL's default `deadlock_timeout` (1 s), and never above half the server's setting: a
 * deadlock check only runs in a session that has waited that long, so matview gives up its
 * wait before an application's session could find a cycle through it and abort itself.
 */
export const SOURCE_LOCK_TIMEOUT_MS = 400

/** How many times the DDL on one source is tried, waiting a little longer after each miss. */
export const SOURCE_LOCK_ATTEMPTS = 30

/** lock_not_available, deadlock_detected: someone else holds the lock; matview steps back. */
const LOCK_CODES = new Set(['55P03', '40P01'])

export interface SourceDdlOptions {
  /** Default {@link SOURCE_LOCK_ATTEMPTS}. */
  attempts?: number
  /** Checked between attempts: a stopping run gives up rather than wait on. */
  shouldStop?: () => unknown
}

/**
 * Runs `work`, DDL on one source table (CREATE or DROP TRIGGER), in a transaction of its own
 * with a short `lock_timeout`, and tries again with a growing pause when the lock is not free.
 * Writers queue behind a waiting ACCESS EXCLUSIVE or SHARE ROW EXCLUSIVE request, so matview
 * must never wait long, and must never wait while holding another source's lock: that is how
 * a rebuild that installed capture on several sources in one transaction crossed an
 * application's FK cascade and got the application's transaction killed as the deadlock victim
 * (issue 12, point 10). Here matview holds at most one source table at a time and only for the
 * few catalog writes of the DDL, and it is always matview that waits or gives up.
 */
export async function onSource<T>(
  db: Kysely<any>,
  view: string,
  table: string,
  work: (trx: Kysely<any>) => Promise<T>,
  options: SourceDdlOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? SOURCE_LOCK_ATTEMPTS
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction().execute(async (trx) => {
        await setSourceLockTimeout(trx)
        // The schema watch's event triggers leave matview's own trigger DDL alone.
        await markOwnDdl(trx)
        return work(trx)
      })
    } catch (error) {
      if (!LOCK_CODES.has(postgresError(error)?.code ?? '')) throw error
      if (attempt >= attempts || options.shouldStop?.()) {
        throw new ViewRunError(
          view,
          `table "${table}" stayed locked by other transactions (${attempt} tries of ${SOURCE_LOCK_TIMEOUT_MS}ms), so its capture triggers could not be changed; nothing waits on matview: run again when the long transaction on it is done`,
          { cause: error },
        )
      }
      // Writers queued behind the attempt go first; a long transaction gets time to end.
      await sleep(Math.min(2000, 50 * attempt * attempt))
    }
  }
}

/** `lock_timeout` for the rest of the transaction: {@link SOURCE_LOCK_TIMEOUT_MS} or less. */
export async function setSourceLockTimeout(trx: Kysely<any>): Promise<void> {
  await sql`
    SELECT pg_catalog.set_config('lock_timeout',
      least(${SOURCE_LOCK_TIMEOUT_MS}::int8,
            greatest(1, (SELECT setting::int8 / 2 FROM pg_catalog.pg_settings
                         WHERE name = 'deadlock_timeout')))::text || 'ms', true)`.execute(trx)
}
