import { type Kysely, sql } from 'kysely'
import { findCrossKey, type TableName } from '../analysis/cross-key.js'
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
  const uniques = await catalogUniqueKeys(db, tableNamesIn(parsed.select))
  const [finding] = findCrossKey(parsed, view.key, {
    functions: functionKindsFrom(kinds),
    uniqueKeys: (table) => uniques.get(tableText(table)) ?? [],
  })
  if (!finding) return
  const where = describeLocation(text, finding.location)
  throw new ViewDefinitionError(
    view.name,
    `the query is not key-local: ${finding.construct}${where ? ` at ${where} of the query` : ''}: ${finding.why}, so a write would leave other keys' rows wrong; ${finding.instead ? `${finding.instead}, or ` : ''}keep the view by rebuilds with strategy: 'rebuild'`,
  )
}

/** `schema.name` or `name`, as the query wrote it: the key of the unique-keys map. */
function tableText(table: TableName): string {
  return table.schema ? `${table.schema}.${table.name}` : table.name
}

/** Every table the query names (FROM items anywhere in it). */
function tableNamesIn(node: unknown): TableName[] {
  const found = new Map<string, TableName>()
  const visit = (n: unknown): void => {
    if (Array.isArray(n)) {
      for (const item of n) visit(item)
      return
    }
    if (typeof n !== 'object' || n === null) return
    const rv = (n as { RangeVar?: { schemaname?: string; relname: string } }).RangeVar
    if (rv) {
      const table = { ...(rv.schemaname ? { schema: rv.schemaname } : {}), name: rv.relname }
      found.set(tableText(table), table)
    }
    for (const value of Object.values(n)) visit(value)
  }
  visit(node)
  return [...found.values()]
}

/**
 * The column sets of each table's unique indexes without expressions or predicates, as the
 * query names the table (resolved by the search path, as the query is).
 */
async function catalogUniqueKeys(
  db: Kysely<any>,
  tables: TableName[],
): Promise<Map<string, string[][]>> {
  const keys = new Map<string, string[][]>()
  for (const table of tables) {
    const qualified = table.schema
      ? sql`pg_catalog.quote_ident(${table.schema}) || '.' || pg_catalog.quote_ident(${table.name})`
      : sql`pg_catalog.quote_ident(${table.name})`
    const { rows } = await sql<{ columns: string[] }>`
      SELECT array_agg(a.attname::text ORDER BY k.n) AS columns
      FROM pg_catalog.pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE i.indrelid = pg_catalog.to_regclass(${qualified}) AND i.indisunique
        AND i.indexprs IS NULL AND i.indpred IS NULL
      GROUP BY i.indexrelid, i.indisprimary ORDER BY i.indisprimary DESC`.execute(db)
    keys.set(
      tableText(table),
      rows.map((r) => r.columns),
    )
  }
  return keys
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
