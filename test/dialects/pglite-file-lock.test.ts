import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { lockDataDirectory } from '../../src/dialects/pglite-file-lock.js'
import { CLI_ENV, runCli } from '../support/cli.js'

// The lock file that keeps a second process off an embedded database's directory, when the pid
// it names is reused: a container restarted with the same pid (often 1), or another process that
// got the pid since. PGlite only (PostgreSQL has a server that keeps its sessions apart).
// Reading a process's start time needs Linux's /proc: elsewhere a live pid is taken as the
// holder, and the cases that depend on the start time are skipped, visibly.

const onLinux = process.platform === 'linux'
let children: ChildProcess[] = []
afterEach(() => {
  for (const child of children) child.kill('SIGKILL')
  children = []
})

function lockOf(dataDir: string): { pid: number; started?: string } {
  return JSON.parse(readFileSync(`${dataDir}.lock`, 'utf8'))
}

const dirs = () => join(mkdtempSync(join(tmpdir(), 'matview-lock-')), 'db')
const BUSY = /in use by another matview process \(pid (\d+)\)/

describe('the embedded database lock file', () => {
  it('takes over a lock naming this very pid that this process does not hold (a restarted container)', () => {
    const dataDir = dirs()
    writeFileSync(
      `${dataDir}.lock`,
      JSON.stringify({ pid: process.pid, started: 'another-boot:1' }),
    )
    const release = lockDataDirectory(dataDir)
    expect(lockOf(dataDir).pid).toBe(process.pid)
    if (onLinux) expect(lockOf(dataDir).started).toMatch(/^[\w-]+:\d+$/)
    release()
    expect(existsSync(`${dataDir}.lock`)).toBe(false)
    // A lock of an earlier version (a bare pid) naming this pid is taken over the same way.
    writeFileSync(`${dataDir}.lock`, String(process.pid))
    lockDataDirectory(dataDir)()
  })

  it('refuses a second open of the same directory in this process', () => {
    const dataDir = dirs()
    const release = lockDataDirectory(dataDir)
    expect(() => lockDataDirectory(dataDir)).toThrow(/already open in this process/)
    release()
    lockDataDirectory(dataDir)()
  })

  it.skipIf(!onLinux)(
    'takes over a lock naming a live unrelated process whose start time differs (a reused pid)',
    () => {
      const dataDir = dirs()
      // The test runner's parent is alive, and is not the process that wrote this lock.
      writeFileSync(`${dataDir}.lock`, JSON.stringify({ pid: process.ppid, started: 'x:1' }))
      const release = lockDataDirectory(dataDir)
      expect(lockOf(dataDir).pid).toBe(process.pid)
      release()
    },
  )

  it('refuses a lock of an earlier version naming a live process, and takes over one naming a dead one', () => {
    const dataDir = dirs()
    writeFileSync(`${dataDir}.lock`, String(process.ppid))
    expect(() => lockDataDirectory(dataDir)).toThrow(BUSY)
    writeFileSync(`${dataDir}.lock`, '999999999')
    lockDataDirectory(dataDir)()
  })

  it('refuses a directory a live matview process holds, then takes it over once that process is killed', async () => {
    const dataDir = dirs()
    const module = pathToFileURL(resolve('dist/dialects/pglite-file-lock.js')).href
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { lockDataDirectory } = await import(${JSON.stringify(module)})
         lockDataDirectory(${JSON.stringify(dataDir)}); console.log('locked'); setInterval(() => {}, 1000)`,
      ],
      { env: CLI_ENV, stdio: ['ignore', 'pipe', 'inherit'] },
    )
    children.push(child)
    await new Promise<void>((ready, fail) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('locked')) ready()
      })
      child.on('exit', (code) => fail(new Error(`the holder exited with ${code}`)))
    })
    expect(() => lockDataDirectory(dataDir)).toThrow(
      `the embedded database at ${dataDir} is in use by another matview process (pid ${child.pid}); wait for it to finish`,
    )
    // The CLI is refused too, with the same line.
    const busy = await runCli(['status', '--database', `pglite:${dataDir}`])
    expect(busy.code).toBe(2)
    expect(busy.stderr).toMatch(BUSY)
    const exited = new Promise((done) => child.once('exit', done))
    child.kill('SIGKILL')
    await exited
    lockDataDirectory(dataDir)()
  })

  it.skipIf(!onLinux)(
    'lets the CLI open a database whose lock names pid 1 with another start time',
    async () => {
      const dataDir = dirs()
      // As a container's matview, pid 1, finds the lock its previous life left.
      writeFileSync(`${dataDir}.lock`, JSON.stringify({ pid: 1, started: 'x:1' }))
      const result = await runCli(['status', '--database', `pglite:${dataDir}`])
      expect(result.stderr).toBe('')
      expect(result.code).toBe(0)
      expect(existsSync(`${dataDir}.lock`)).toBe(false)
    },
  )
})
