import {
  advisoryUnlock,
  advisoryUnlockShared,
  isAdvisoryLocked,
  tryAdvisoryLock,
  tryAdvisoryLockShared,
} from './advisory-lock-sql.js'
import type { DialectAdapter } from './dialect-adapter.js'

/** PostgreSQL through node-postgres: session-level advisory locks guard each view. */
export const postgresAdapter: DialectAdapter = {
  name: 'postgres',
  multiProcess: true,
  tryLock: tryAdvisoryLock,
  unlock: advisoryUnlock,
  tryLockShared: tryAdvisoryLockShared,
  unlockShared: advisoryUnlockShared,
  isLocked: isAdvisoryLocked,
}
