import { type Kysely, sql } from 'kysely'
import type { LockKey } from './dialect-adapter.js'

// The two-int form of the advisory lock functions keeps matview's locks apart from the
// application's one-bigint locks; hashtext() turns the names into the two ints.

export async function tryAdvisoryLock(conn: Kysely<any>, key: LockKey): Promise<boolean> {
  const { rows } = await sql<{ locked: boolean }>`
    SELECT pg_try_advisory_lock(hashtext(${key.schema}), hashtext(${key.name})) AS locked
  `.execute(conn)
  return rows[0]?.locked === true
}

export async function advisoryUnlock(conn: Kysely<any>, key: LockKey): Promise<void> {
  await sql`SELECT pg_advisory_unlock(hashtext(${key.schema}), hashtext(${key.name}))`.execute(conn)
}

export async function tryAdvisoryLockShared(conn: Kysely<any>, key: LockKey): Promise<boolean> {
  const { rows } = await sql<{ locked: boolean }>`
    SELECT pg_try_advisory_lock_shared(hashtext(${key.schema}), hashtext(${key.name})) AS locked
  `.execute(conn)
  return rows[0]?.locked === true
}

export async function advisoryUnlockShared(conn: Kysely<any>, key: LockKey): Promise<void> {
  await sql`SELECT pg_advisory_unlock_shared(hashtext(${key.schema}), hashtext(${key.name}))`.execute(
    conn,
  )
}

export async function isAdvisoryLocked(db: Kysely<any>, key: LockKey): Promise<boolean> {
  // pg_locks shows the two ints as oids, that is unsigned: mask the signed hash to compare.
  const { rows } = await sql<{ locked: boolean }>`
    SELECT EXISTS (
      SELECT 1 FROM pg_locks
      WHERE locktype = 'advisory' AND objsubid = 2 AND granted
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND classid::bigint = (hashtext(${key.schema})::bigint & 4294967295)
        AND objid::bigint = (hashtext(${key.name})::bigint & 4294967295)
    ) AS locked
  `.execute(db)
  return rows[0]?.locked === true
}
