import { ConnectionError, errorMessage, isMatviewError } from '../errors/matview-error.js'

/**
 * PGlite admits one process per data directory, so while a worker (or an update) holds
 * `pglite:PATH`, every other command is refused by its lock. For the commands that only read,
 * say how to get the same answer instead of only "wait".
 */
export function explainEmbeddedInUse(
  error: unknown,
  command: 'status' | 'history' | 'exec',
): unknown {
  if (
    !isMatviewError(error) ||
    error.code !== 'DATABASE_UNREACHABLE' ||
    !/embedded database/.test(error.message) ||
    !/in use/.test(error.message)
  )
    return error
  const hint =
    command === 'exec'
      ? 'stop that process first (Ctrl-C, or kill -INT with its pid: it ends its batch and exits), or connect your application to the same database in its own process by handing matview its PGlite instance (database: pglite)'
      : `${command} cannot read it until that process stops (an embedded database admits one process). Meanwhile a worker started with --metrics-port serves each view's pending keys, lag and last success at /metrics (matview_view_pending_keys, matview_view_lag_seconds, matview_view_last_success_timestamp_seconds); or stop it (kill -INT with its pid: it ends its batch and exits) and run ${command}; or keep the views in PostgreSQL, where ${command} runs beside workers`
  const message = `${errorMessage(error)
    .split('\n')[0]!
    .replace(/; wait for it to finish$/, '')}; ${hint}`
  return new ConnectionError(message, { cause: error })
}
