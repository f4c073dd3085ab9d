import { afterEach, beforeEach } from 'vitest'
import { type DialectName, freshDatabase, type TestDatabase } from './dialects.js'

export interface TestDatabaseHooks {
  /** Runs after the fresh database is made, before the test (tables, rows, a Matview). */
  setup?: (database: TestDatabase) => Promise<unknown>
  /** Runs after the test, before the database is closed (close what holds a connection). */
  teardown?: () => Promise<unknown>
}

/**
 * A fresh database for each test of the enclosing `describe`, closed after it.
 *
 * The object returned stays the same and is refilled before each test, so test bodies and
 * helpers defined beside them can keep one `database` name instead of a `let` reassigned in
 * hooks. Read it only inside hooks and tests: before the first test it is empty.
 *
 * @example
 * describe.each(DIALECTS)('views on %s', (dialect) => {
 *   const database = useTestDatabase(dialect, {
 *     setup: (database) => createDemoSchema(database.db, { customers: 10, orders: 50 }),
 *   })
 *   it('…', async () => { await Matview.open({ database }) })
 * })
 */
export function useTestDatabase(dialect: DialectName, hooks: TestDatabaseHooks = {}): TestDatabase {
  const current = {} as TestDatabase
  let opened: TestDatabase | undefined
  beforeEach(async () => {
    opened = await freshDatabase(dialect)
    Object.assign(current, opened)
    await hooks.setup?.(current)
  })
  afterEach(async () => {
    await hooks.teardown?.()
    await opened?.close()
    opened = undefined
  })
  return current
}
