// A `matview worker` process (the built bin) in a temporary directory holding its config, for
// the benchmark's latency phase and the soak.
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const BIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url))

/**
 * Starts the worker with `config` as the text of its matview.config.mjs. `stop()` sends SIGTERM,
 * waits, removes the directory, and returns the exit code (printing stderr when it is not 0).
 */
export async function startWorkerProcess(config, args = []) {
  const dir = await mkdtemp(join(tmpdir(), 'matview-worker-'))
  await writeFile(join(dir, 'matview.config.mjs'), config)
  const started = new Date()
  const child = spawn(process.execPath, [BIN, 'worker', ...args], {
    cwd: dir,
    env: { ...process.env, DATABASE_URL: '', MATVIEW_DATABASE_URL: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr.on('data', (chunk) => {
    stderr += chunk
  })
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => resolve(code ?? signal)),
  )
  return {
    started,
    async stop() {
      child.kill('SIGTERM')
      const code = await exited
      await rm(dir, { recursive: true, force: true })
      if (code !== 0) process.stderr.write(`the worker exited ${code}:\n${stderr}\n`)
      return code
    },
  }
}
