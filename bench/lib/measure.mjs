// Timing, medians and pgbench.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Milliseconds `fn` takes, and its result. */
export async function time(fn) {
  const start = performance.now()
  const result = await fn()
  return { ms: performance.now() - start, result }
}

export function median(values) {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/**
 * Runs `pgbench` against the benchmark database with `search_path` set to `schema`, so the
 * same script or the built-in TPC-B-like run goes to one table set or the other. Returns tps
 * (without the initial connection time).
 */
export async function pgbench(options) {
  const { binary, url, schema, args } = options
  const parsed = new URL(url)
  const env = { ...process.env, PGOPTIONS: `-c search_path=${schema}` }
  if (parsed.password) env.PGPASSWORD = decodeURIComponent(parsed.password)
  const connection = [
    '-h',
    parsed.hostname || 'localhost',
    '-p',
    parsed.port || '5432',
    ...(parsed.username ? ['-U', decodeURIComponent(parsed.username)] : []),
    decodeURIComponent(parsed.pathname.slice(1)),
  ]
  const { stdout } = await run(binary, [...args, ...connection], {
    env,
    maxBuffer: 16 * 1024 * 1024,
  })
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)
  if (!tps && !args.includes('-i')) throw new Error(`pgbench printed no tps:\n${stdout}`)
  return tps ? Number(tps[1]) : undefined
}
