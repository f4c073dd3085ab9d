import type { Kysely } from 'kysely'
import { expect } from 'vitest'
import { connect, type Database, type Matview } from '../../src/index.js'

/**
 * A connection whose first view lock runs a rebuild of `view` just before it is taken, so that
 * the caller (drop, verify --repair) reads the catalog, then finds a swapped-in table once it
 * holds the lock. `afterSwap` may change things behind matview's back before the lock is taken.
 * PostgreSQL only: the rebuild needs a second connection while the caller holds one.
 */
export async function connectSwappingBeforeLock(
  mv: Matview,
  url: string,
  view: string,
  afterSwap: (db: Kysely<any>) => Promise<void> = async () => {},
): Promise<Database> {
  const own = await connect(url)
  return {
    ...own,
    adapter: {
      ...own.adapter,
      tryLock: async (conn, key) => {
        expect((await mv.rebuild([view])).views[0]!.outcome).toBe('done')
        await afterSwap(own.db)
        return own.adapter.tryLock(conn, key)
      },
    },
  }
}
