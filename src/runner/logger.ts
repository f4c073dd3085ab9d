/** The logger hooks and the runner write to; the CLI decides where lines go. */
export interface Logger {
  debug(message: string): void
  info(message: string): void
  warn(message: string): void
  error(message: string): void
}

/** Writes nothing: the default for the programmatic API. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }

/** Plain lines on stderr, `debug` only when verbose. */
export function createConsoleLogger(options: { verbose?: boolean } = {}): Logger {
  const write = (level: string, message: string) => process.stderr.write(`${level} ${message}\n`)
  return {
    debug: (m) => options.verbose && write('debug', m),
    info: (m) => write('info ', m),
    warn: (m) => write('warn ', m),
    error: (m) => write('error', m),
  }
}
