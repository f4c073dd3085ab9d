import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { ConnectionError } from '../errors/matview-error.js'

/**
 * PGlite keeps its data in a directory that only one process may open: a second one would
 * corrupt it. A lock file beside the directory, holding the owner's pid, says it is taken;
 * a lock left by a process that no longer exists is taken over.
 */
export function lockDataDirectory(dataDir: string): () => void {
  const lockPath = `${dataDir}.lock`
  mkdirSync(dirname(lockPath), { recursive: true })
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx')
      writeSync(fd, String(process.pid))
      closeSync(fd)
      return () => rmSync(lockPath, { force: true })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      const owner = Number.parseInt(readFileSync(lockPath, 'utf8'), 10)
      if (Number.isInteger(owner) && owner !== process.pid && isAlive(owner)) {
        throw new ConnectionError(
          `the embedded database at ${dataDir} is in use by another matview process (pid ${owner}); wait for it to finish`,
        )
      }
      rmSync(lockPath, { force: true })
    }
  }
  throw new ConnectionError(`cannot lock the embedded database at ${dataDir}`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
