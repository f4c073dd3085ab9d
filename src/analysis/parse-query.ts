/** A node of PostgreSQL's raw parse tree, as libpg-query gives it (JSON, one key per node type). */
export type Node = Record<string, any>

/** A view's query parsed by PostgreSQL's own parser (libpg-query, the WASM build). */
export interface ParsedQuery {
  /** The text parsed: node locations are byte offsets into it. */
  text: string
  /** The query's SelectStmt (its fields, without the `SelectStmt` wrapper). */
  select: Node
}

/** The query is not one SELECT, or the parser refused it; `location` when the parser gave one. */
export class QueryParseError extends Error {
  readonly location: number | undefined
  constructor(message: string, location?: number) {
    super(message)
    this.name = 'QueryParseError'
    this.location = location
  }
}

type Parser = typeof import('libpg-query')

// Loaded on first use: only create and rebuild parse, and the import costs ~75 ms of start-up.
let loading: Promise<Parser> | undefined

/** Parses a view's query: one SELECT (or VALUES, or a set operation), nothing else. */
export async function parseQuery(text: string): Promise<ParsedQuery> {
  loading ??= import('libpg-query').then(async (parser) => {
    await parser.loadModule()
    return parser
  })
  const { parse } = await loading
  let tree: { stmts?: { stmt?: Node }[] }
  try {
    tree = (await parse(text)) as typeof tree
  } catch (error) {
    const details = (error as { sqlDetails?: { cursorPosition?: number } }).sqlDetails
    throw new QueryParseError(
      error instanceof Error ? error.message : String(error),
      details?.cursorPosition,
    )
  }
  const stmts = tree.stmts ?? []
  if (stmts.length !== 1) throw new QueryParseError(`${stmts.length} statements, not one query`)
  const select = stmts[0]!.stmt?.SelectStmt as Node | undefined
  if (!select) {
    const kind = Object.keys(stmts[0]!.stmt ?? {})[0] ?? 'an empty statement'
    throw new QueryParseError(`${kind} is not a query; a view's query is one SELECT`)
  }
  return { text, select }
}

/**
 * `line 3, column 12` for a node's location, a byte offset into `text` (the parser counts
 * UTF-8 bytes); undefined when the parser gave none (-1).
 */
export function describeLocation(text: string, location: number | undefined): string | undefined {
  if (location === undefined || location < 0) return undefined
  const before = Buffer.from(text, 'utf8').subarray(0, location).toString('utf8')
  const lines = before.split('\n')
  return `line ${lines.length}, column ${lines.at(-1)!.length + 1}`
}
