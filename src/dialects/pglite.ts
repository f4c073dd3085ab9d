import type { Kysely } from 'kysely'
import type { DialectAdapter, LockKey } from './dialect-adapter.js'

/**
 * PGlite runs in this process on one connection, and its data directory is guarded by a
 * lock file (see `open-pglite.ts`), so no other process can reach it. PostgreSQL's advisory
 * locks are re-entrant within one session, so they cannot keep two runners in this process
 * apart: an in-process set of held keys per database does.
 */
export function createPgliteAdapter(): DialectAdapter {
  const held = new Set<string>()
  const id = (key: LockKey) => JSON.stringify([key.schema, key.name])
  return {
    name: 'pglite',
    multiProcess: false,
    async tryLock(_conn: Kysely<any>, key: LockKey) {
      if (held.has(id(key))) return false
      held.add(id(key))
      return true
    },
    async unlock(_conn: Kysely<any>, key: LockKey) {
      held.delete(id(key))
    },
    async isLocked(_db: Kysely<any>, key: LockKey) {
      return held.has(id(key))
    },
  }
}
