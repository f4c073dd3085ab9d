import { advisoryUnlock, isAdvisoryLocked, tryAdvisoryLock } from './advisory-lock-sql.js'
import type { DialectAdapter } from './dialect-adapter.js'

/** PostgreSQL through node-postgres: session-level advisory locks guard each view. */
export const postgresAdapter: DialectAdapter = {
  name: 'postgres',
  multiProcess: true,
  tryLock: tryAdvisoryLock,
  unlock: advisoryUnlock,
  isLocked: isAdvisoryLocked,
}
