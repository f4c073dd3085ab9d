import type { Kysely } from 'kysely'
import type { DialectAdapter, LockKey } from './dialect-adapter.js'

/** Who holds one lock: an exclusive holder, and shared holders, by the connection they run on. */
interface Held {
  exclusive: object | undefined
  shared: Set<object>
}

/**
 * PGlite runs in this process on one connection, and its data directory is guarded by a
 * lock file (see `pglite-file-lock.ts`), so no other process can reach it. PostgreSQL's advisory
 * locks are re-entrant within one session, so they cannot keep two runners in this process
 * apart: an in-process table of held keys per database does. A runner's `conn` (the Kysely
 * instance of its `db.connection()`) stands for its session: its own holds never conflict.
 */
export function createPgliteAdapter(): DialectAdapter {
  const locks = new Map<string, Held>()
  const id = (key: LockKey) => JSON.stringify([key.schema, key.name])
  const held = (key: LockKey): Held => {
    let entry = locks.get(id(key))
    if (!entry) {
      entry = { exclusive: undefined, shared: new Set() }
      locks.set(id(key), entry)
    }
    return entry
  }
  const forget = (key: LockKey, entry: Held) => {
    if (entry.exclusive === undefined && entry.shared.size === 0) locks.delete(id(key))
  }
  return {
    name: 'pglite',
    multiProcess: false,
    async tryLock(conn: Kysely<any>, key: LockKey) {
      const entry = held(key)
      const others = [...entry.shared].some((holder) => holder !== conn)
      if (entry.exclusive !== undefined || others) {
        forget(key, entry)
        return false
      }
      entry.exclusive = conn
      return true
    },
    async unlock(_conn: Kysely<any>, key: LockKey) {
      const entry = held(key)
      entry.exclusive = undefined
      forget(key, entry)
    },
    async tryLockShared(conn: Kysely<any>, key: LockKey) {
      const entry = held(key)
      if (entry.exclusive !== undefined && entry.exclusive !== conn) return false
      entry.shared.add(conn)
      return true
    },
    async unlockShared(conn: Kysely<any>, key: LockKey) {
      const entry = held(key)
      entry.shared.delete(conn)
      forget(key, entry)
    },
    async isLocked(_db: Kysely<any>, key: LockKey) {
      const entry = locks.get(id(key))
      return entry !== undefined && (entry.exclusive !== undefined || entry.shared.size > 0)
    },
  }
}
