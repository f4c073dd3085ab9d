import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'
import { ConnectionError } from '../errors/matview-error.js'

/** Who holds a lock: a process id, and when that process started where the system says so. */
interface Holder {
  pid: number
  /** `<boot id>:<start time in clock ticks>` on Linux; absent elsewhere and in old lock files. */
  started?: string
}

/** The data directories this process has open: a second open here must be refused too. */
const heldHere = new Set<string>()

/**
 * PGlite keeps its data in a directory that only one process may open: a second one would
 * corrupt it. A lock file beside the directory names the holder; a lock left by a process that
 * no longer exists is taken over.
 *
 * A pid alone does not name a process for long: pids are reused, and a container restarted
 * after a crash often runs matview under the very pid that wrote the lock (1, say). So the lock
 * also holds the holder's start time (Linux: /proc/PID/stat, with the boot id), and a live pid
 * whose start time differs is another process, not the holder. Our own pid with no lock held
 * in this process is a lock left by an earlier life of this pid. Where the start time cannot be
 * read (other systems), a live pid is taken as the holder: the lock is refused, and deleting
 * the file is the way out once no matview process runs.
 */
export function lockDataDirectory(dataDir: string): () => void {
  const lockPath = `${dataDir}.lock`
  if (heldHere.has(lockPath)) {
    throw new ConnectionError(
      `the embedded database at ${dataDir} is already open in this process; close it first (one Matview per data directory)`,
    )
  }
  mkdirSync(dirname(lockPath), { recursive: true })
  const me: Holder = { pid: process.pid, ...startedAt(process.pid) }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx')
      try {
        writeSync(fd, JSON.stringify(me))
      } finally {
        closeSync(fd)
      }
      heldHere.add(lockPath)
      return () => {
        heldHere.delete(lockPath)
        rmSync(lockPath, { force: true })
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      const owner = readHolder(lockPath)
      if (owner && holds(owner)) {
        throw new ConnectionError(
          `the embedded database at ${dataDir} is in use by another matview process (pid ${owner.pid}); wait for it to finish`,
        )
      }
      rmSync(lockPath, { force: true })
    }
  }
  throw new ConnectionError(`cannot lock the embedded database at ${dataDir}`)
}

/** The lock's holder: JSON `{ pid, started }`, or a bare pid (locks of earlier versions). */
function readHolder(lockPath: string): Holder | undefined {
  let text: string
  try {
    text = readFileSync(lockPath, 'utf8').trim()
  } catch {
    return undefined
  }
  try {
    const parsed = JSON.parse(text) as Partial<Holder>
    if (typeof parsed === 'object' && parsed !== null && Number.isInteger(parsed.pid)) {
      return {
        pid: parsed.pid as number,
        ...(typeof parsed.started === 'string' ? { started: parsed.started } : {}),
      }
    }
  } catch {
    // Not JSON: a bare pid, below.
  }
  const pid = Number.parseInt(text, 10)
  return Number.isInteger(pid) ? { pid } : undefined
}

/** Whether the process the lock names is still the one that wrote it. */
function holds(owner: Holder): boolean {
  // Our own pid, and this process holds no lock on it: an earlier process under this pid.
  if (owner.pid === process.pid) return false
  if (!isAlive(owner.pid)) return false
  if (owner.started === undefined) return true
  const now = startedAt(owner.pid).started
  // Unreadable start time (another system, a hidden /proc): a live pid is taken as the holder.
  return now === undefined || now === owner.started
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

let bootId: string | undefined

/**
 * When `pid` started, as Linux tells it: field 22 of /proc/PID/stat (clock ticks since boot),
 * with the boot id so a lock from before a reboot never matches. Empty elsewhere.
 */
function startedAt(pid: number): { started?: string } {
  if (process.platform !== 'linux') return {}
  try {
    bootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const ticks = fields[22 - 3]
    return ticks && /^\d+$/.test(ticks) ? { started: `${bootId}:${ticks}` } : {}
  } catch {
    return {}
  }
}
