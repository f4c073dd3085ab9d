import { type Kysely, type RawBuilder, sql } from 'kysely'

/**
 * The rows in which a table and the query it should equal differ: `(target EXCEPT query)` and
 * `(query EXCEPT target)`, both ways, as the DESIGN's first invariant states it.
 */
export async function queryDifferences(
  db: Kysely<any>,
  target: string,
  query: RawBuilder<unknown>,
  columns: string[],
): Promise<{ extra: unknown[]; missing: unknown[] }> {
  const cols = sql.join(columns.map((c) => sql.id(c)))
  const t = sql.table(target)
  const extra = await sql`SELECT ${cols} FROM ${t} EXCEPT SELECT ${cols} FROM (${query}) q`.execute(
    db,
  )
  const missing =
    await sql`SELECT ${cols} FROM (${query}) q EXCEPT SELECT ${cols} FROM ${t}`.execute(db)
  return { extra: extra.rows, missing: missing.rows }
}
