import { ViewDefinitionError } from '../errors/matview-error.js'

/** The query returned a duplicate or NULL key: the definition is wrong, not the batch. */
export class KeyError extends ViewDefinitionError {
  /** The problem without the view's name, to build on. */
  readonly detail: string
  constructor(view: string, detail: string, options?: { cause?: unknown }) {
    super(view, detail, options)
    this.detail = detail
  }
}

export function duplicateKeyError(view: { name: string }, key: string, cause: unknown): KeyError {
  return new KeyError(
    view.name,
    `the query returns more than one row for key ${key}; a view's key must identify one row: fix the key or the query`,
    { cause },
  )
}

export function nullKeyError(view: { name: string }, column: string, cause?: unknown): KeyError {
  return new KeyError(
    view.name,
    `the query returns a row whose key column "${column}" is NULL; a key must never be NULL (filter such rows out or coalesce them)`,
    { cause },
  )
}
