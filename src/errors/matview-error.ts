/**
 * Every error matview raises on purpose is a {@link MatviewError} with a stable `code`,
 * so the CLI can map it to a one-line message and an exit code in one place
 * (`src/cli/exit-codes.ts`), and applications can branch on `error.code`.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'CONFIG_NOT_FOUND'
  | 'USAGE'
  | 'UNKNOWN_VIEW'
  | 'VIEW_DEFINITION'
  | 'VIEW_NO_PROGRESS'
  | 'VIEW_FAILED'
  | 'CATALOG_TOO_NEW'
  | 'DATABASE_UNREACHABLE'
  | 'DEFINITION_CHANGED'
  | 'STATEMENT_FAILED'

export class MatviewError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/** The config file, an env var or a flag is wrong; names the field. */
export class ConfigError extends MatviewError {
  constructor(
    message: string,
    options?: { cause?: unknown; code?: 'CONFIG_INVALID' | 'CONFIG_NOT_FOUND' },
  ) {
    super(options?.code ?? 'CONFIG_INVALID', message, options)
  }
}

/** The command line asks for something that cannot be done (unknown view, bad flag value). */
export class UsageError extends MatviewError {
  constructor(message: string, code: 'USAGE' | 'UNKNOWN_VIEW' = 'USAGE') {
    super(code, message)
  }
}

/** A view's definition is wrong; `view` names it. */
export class ViewDefinitionError extends MatviewError {
  readonly view: string
  constructor(view: string, message: string, options?: { cause?: unknown }) {
    super('VIEW_DEFINITION', `view "${view}": ${message}`, options)
    this.view = view
  }
}

/** A view failed while running (a hook threw, a batch made no progress, a duplicate key). */
export class ViewRunError extends MatviewError {
  readonly view: string
  constructor(
    view: string,
    message: string,
    options?: { cause?: unknown; code?: 'VIEW_FAILED' | 'VIEW_NO_PROGRESS' | 'DEFINITION_CHANGED' },
  ) {
    super(options?.code ?? 'VIEW_FAILED', `view "${view}": ${message}`, options)
    this.view = view
  }
}

/** The database holds a catalog written by a newer matview than this one. */
export class CatalogVersionError extends MatviewError {
  constructor(
    readonly schema: string,
    readonly found: number,
    readonly supported: number,
  ) {
    super(
      'CATALOG_TOO_NEW',
      `the catalog in schema "${schema}" is at version ${found}, newer than this matview supports (${supported}); upgrade matview`,
    )
  }
}

/** The database cannot be reached; the message names host and port. */
export class ConnectionError extends MatviewError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DATABASE_UNREACHABLE', message, options)
  }
}

/** A statement of a script given to `matview exec` failed; the message names it and its line. */
export class StatementError extends MatviewError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('STATEMENT_FAILED', message, options)
  }
}

export function isMatviewError(error: unknown): error is MatviewError {
  return error instanceof MatviewError
}

/** The message of anything thrown, for logs and the run history. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message
  return String(error)
}
