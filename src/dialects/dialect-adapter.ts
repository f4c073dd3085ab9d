import type { Kysely } from 'kysely'

/** Identifies one lock: the catalog schema and the view (or view partition) it guards. */
export interface LockKey {
  schema: string
  name: string
}

/**
 * What differs between the databases matview runs on, in one object per database
 * (the shape of Kysely's own dialect adapters), so the engine never asks "which database is this?".
 */
export interface DialectAdapter {
  readonly name: 'postgres' | 'pglite'
  /** Several processes can share the database, so cross-process locks matter. */
  readonly multiProcess: boolean
  /**
   * Tries to take the lock that lets one runner process a view. `conn` must be a Kysely
   * instance bound to one connection (`db.connection()`), held until {@link unlock}: the lock
   * is session-level, so a crashed runner's lock goes with its connection.
   */
  tryLock(conn: Kysely<any>, key: LockKey): Promise<boolean>
  unlock(conn: Kysely<any>, key: LockKey): Promise<void>
  /**
   * Tries to take the lock in shared mode: shared holders exclude an exclusive one and not each
   * other (the appliers of a partitioned view's partitions). A connection that holds the lock
   * exclusively may also take it shared, then give up the exclusive hold: a downgrade.
   */
  tryLockShared(conn: Kysely<any>, key: LockKey): Promise<boolean>
  unlockShared(conn: Kysely<any>, key: LockKey): Promise<void>
  /** Whether some session (this one included) holds the lock now. */
  isLocked(db: Kysely<any>, key: LockKey): Promise<boolean>
}
