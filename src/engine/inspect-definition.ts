import { type Kysely, type RawBuilder, sql } from 'kysely'
import { ViewDefinitionError } from '../errors/matview-error.js'
import { displayName, parseTableName, type QualifiedTable } from './names.js'
import { postgresError } from './postgres-errors.js'

/** A table found in the database. */
export interface FoundTable extends QualifiedTable {
  oid: string
  kind: string
}

export interface Column {
  name: string
  type: string
}

/** Finds `name` (`table` through the search path, or `schema.table`), or undefined. */
export async function findTable(db: Kysely<any>, name: string): Promise<FoundTable | undefined> {
  const { schema, table } = parseTableName(name)
  const { rows } = await sql<{ oid: string; schema: string; table: string; kind: string }>`
    SELECT c.oid::int8::text AS oid, n.nspname AS schema, c.relname AS table, c.relkind AS kind
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = ${table}
      AND (n.nspname = ${schema ?? null}::text
           OR (${schema ?? null}::text IS NULL AND n.nspname = ANY (pg_catalog.current_schemas(false))))
    ORDER BY pg_catalog.array_position(pg_catalog.current_schemas(false), n.nspname::text)
    LIMIT 1`.execute(db)
  return rows[0]
}

/** The columns of a relation, in order. */
export async function columnsOf(db: Kysely<any>, oid: string): Promise<Column[]> {
  const { rows } = await sql<Column>`
    SELECT attname AS name, pg_catalog.format_type(atttypid, atttypmod) AS type
    FROM pg_catalog.pg_attribute
    WHERE attrelid = ${oid}::int8::oid AND attnum > 0 AND NOT attisdropped
    ORDER BY attnum`.execute(db)
  return rows
}

/** What a query reads and returns, learnt from a temporary view of it. */
export interface QueryShape {
  columns: Column[]
  /** Every table the query reads, through plain views too. */
  tables: FoundTable[]
}

/**
 * Creates a temporary view of `query` to learn its columns and the tables it reads (from the
 * view's dependencies, which name what the SQL text reads, not what a plan happens to touch),
 * then drops it. A query PostgreSQL refuses becomes a definition error naming the view.
 */
export async function inspectQuery(
  trx: Kysely<any>,
  view: string,
  what: string,
  query: RawBuilder<unknown>,
): Promise<QueryShape> {
  const probe = sql.id('pg_temp', 'matview_probe')
  try {
    await sql`CREATE TEMP VIEW matview_probe AS ${query}`.execute(trx)
  } catch (error) {
    const pgError = postgresError(error)
    if (!pgError) throw error
    throw new ViewDefinitionError(view, `${what} fails: ${pgError.message}`, { cause: error })
  }
  const { rows: oidRows } = await sql<{ oid: string }>`
    SELECT 'pg_temp.matview_probe'::regclass::oid::int8::text AS oid`.execute(trx)
  const probeOid = oidRows[0]!.oid
  const columns = await columnsOf(trx, probeOid)
  const { rows: tables } = await sql<FoundTable>`
    WITH RECURSIVE reads(oid) AS (
      SELECT d.refobjid
      FROM pg_catalog.pg_rewrite r
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
      WHERE r.ev_class = ${probeOid}::int8::oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class
      UNION
      SELECT d.refobjid
      FROM reads
      JOIN pg_catalog.pg_class c ON c.oid = reads.oid AND c.relkind = 'v'
      JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
      WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> c.oid
    )
    SELECT DISTINCT c.oid::int8::text AS oid, n.nspname AS schema, c.relname AS table, c.relkind AS kind
    FROM reads
    JOIN pg_catalog.pg_class c ON c.oid = reads.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm', 'f')`.execute(trx)
  await sql`DROP VIEW ${probe}`.execute(trx)
  return { columns, tables }
}

/** Checks that `wanted` are all among `columns`; the error lists what there is. */
export function requireColumns(
  view: string,
  wanted: readonly string[],
  columns: readonly Column[],
  describe: (missing: string) => string,
): void {
  const have = new Set(columns.map((c) => c.name))
  for (const name of wanted) {
    if (!have.has(name)) {
      throw new ViewDefinitionError(
        view,
        `${describe(name)} (it has: ${columns.map((c) => c.name).join(', ') || 'no columns'})`,
      )
    }
  }
}

export function tableLabel(t: QualifiedTable): string {
  return `"${displayName(t)}"`
}
