import { errorMessage, isMatviewError } from '../errors/matview-error.js'

/** The exit codes of every command, in one place. */
export const EXIT = {
  ok: 0,
  /** At least one view failed (the others still ran), or a statement of `exec` failed. */
  viewFailed: 1,
  /** The command line or the config is wrong, or the database cannot be used. */
  usage: 2,
  /** `verify` found a view whose table differs from its query (and did not repair it). */
  drift: 3,
  /** `status --check`: a view is over its `maxLag`, its last run failed or it has keys set aside. */
  checkFailed: 4,
  sigint: 130,
  sigterm: 143,
} as const

/** The exit code an error that escaped a command maps to. */
export function exitCodeFor(error: unknown): number {
  if (!isMatviewError(error)) return EXIT.viewFailed
  switch (error.code) {
    case 'VIEW_FAILED':
    case 'VIEW_NO_PROGRESS':
    case 'DEFINITION_CHANGED':
    case 'STATEMENT_FAILED':
      return EXIT.viewFailed
    default:
      return EXIT.usage
  }
}

/** One line for the user: `matview: <message>`; the stack only with --verbose. */
export function formatError(error: unknown, verbose: boolean): string {
  const line = `matview: ${errorMessage(error).split('\n')[0]}`
  if (!verbose) return isMatviewError(error) ? line : `${line} (run with --verbose for details)`
  const stack = error instanceof Error && error.stack ? `\n${error.stack}` : ''
  const cause =
    error instanceof Error && error.cause instanceof Error
      ? `\ncaused by: ${error.cause.stack}`
      : ''
  return `${line}${stack}${cause}`
}
