import { type Kysely, sql } from 'kysely'
import { findCrossKey } from '../analysis/cross-key.js'
import {
  type FunctionKind,
  functionKindsFrom,
  functionNamesIn,
} from '../analysis/function-kinds.js'
import { describeLocation, parseQuery, QueryParseError } from '../analysis/parse-query.js'
import { ViewDefinitionError } from '../errors/matview-error.js'
import type { DeclarativeView } from '../views/declarative.js'
import { constantSql } from './view-sql.js'

/**
 * Refuses a query whose rows for one key depend on other keys' rows (src/analysis/cross-key.ts),
 * unless the view is kept by rebuilds (`strategy: 'rebuild'`): one line naming the construct,
 * where it is in the query, and the way out. Runs after PostgreSQL accepted the query, so the
 * parse only fails on what the parser cannot be trusted with.
 */
export async function refuseCrossKey(db: Kysely<any>, view: DeclarativeView): Promise<void> {
  if (view.strategy === 'rebuild') return
  const text = constantSql(db, view.name, 'the query', view.query)
  const parsed = await parseQuery(text).catch((error) => {
    if (!(error instanceof QueryParseError)) throw error
    const where = describeLocation(text, error.location)
    throw new ViewDefinitionError(
      view.name,
      `matview cannot analyse the query (${error.message}${where ? ` at ${where}` : ''}), so it cannot tell whether a write to one key changes others; keep the view by rebuilds with strategy: 'rebuild'`,
      { cause: error },
    )
  })
  const kinds = await catalogFunctionKinds(db, functionNamesIn(parsed.select))
  const [finding] = findCrossKey(parsed, view.key, functionKindsFrom(kinds))
  if (!finding) return
  const where = describeLocation(text, finding.location)
  throw new ViewDefinitionError(
    view.name,
    `the query is not key-local: ${finding.construct}${where ? ` at ${where} of the query` : ''}: ${finding.why}, so a write would leave other keys' rows wrong; ${finding.instead ? `${finding.instead}, or ` : ''}keep the view by rebuilds with strategy: 'rebuild'`,
  )
}

/** What pg_proc says about these function names (every overload counts). */
async function catalogFunctionKinds(
  db: Kysely<any>,
  names: string[],
): Promise<Map<string, FunctionKind>> {
  if (names.length === 0) return new Map()
  const { rows } = await sql<{
    name: string
    aggregate: boolean
    volatile: boolean
    set_returning: boolean
  }>`
    SELECT proname AS name, bool_or(prokind = 'a') AS aggregate,
           bool_or(provolatile = 'v') AS volatile, bool_or(proretset) AS set_returning
    FROM pg_catalog.pg_proc WHERE proname = ANY(${names}::text[])
    GROUP BY proname`.execute(db)
  return new Map(
    rows.map((r) => [
      r.name,
      { aggregate: r.aggregate, volatile: r.volatile, setReturning: r.set_returning },
    ]),
  )
}
