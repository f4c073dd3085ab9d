import { pino } from 'pino'
import type { Logger } from './logger.js'

/**
 * One JSON object per line on stderr (pino), for log collectors: `level`, `time`, `msg`, `pid`.
 * Written synchronously, so the last lines before an exit are not lost.
 */
export function createJsonLogger(options: { verbose?: boolean } = {}): Logger {
  const log = pino(
    { level: options.verbose ? 'debug' : 'info', base: { pid: process.pid } },
    pino.destination({ dest: 2, sync: true }),
  )
  return {
    debug: (m) => log.debug(m),
    info: (m) => log.info(m),
    warn: (m) => log.warn(m),
    error: (m) => log.error(m),
  }
}
