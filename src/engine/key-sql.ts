import { type RawBuilder, sql } from 'kysely'

/**
 * SQL pieces over a view's key columns. Key values travel as text (`::text` out, untyped
 * parameters in, which PostgreSQL reads as the column's own type), so every key type
 * round-trips exactly whatever the driver does with it.
 */
export function keyColumns(key: readonly string[], alias?: string): RawBuilder<unknown> {
  return sql.join(key.map((k) => (alias ? sql.id(alias, k) : sql.id(k))))
}

/** `alias.k1::text AS "0", alias.k2::text AS "1"`: read back with {@link keyRow}. */
export function keysAsText(key: readonly string[], alias: string): RawBuilder<unknown> {
  return sql.join(key.map((k, i) => sql`${sql.id(alias, k)}::text AS ${sql.id(String(i))}`))
}

export function keyRow(row: Record<string, unknown>, width: number): string[] {
  return Array.from({ length: width }, (_, i) => String(row[String(i)]))
}

/**
 * `alias.k1 = ANY($1) AND alias.k2 = ANY($2)`. For one key column this is exactly the claimed
 * keys. For several it is their cross product, a superset: recomputing a key that did not
 * change is harmless, and every place that uses it (log, query, target) uses the same one, so
 * whatever is cleared from the log is recomputed. Each column's own qual is what PostgreSQL
 * pushes down to the base tables' indexes.
 */
export function keyIn(
  key: readonly string[],
  alias: string,
  keys: readonly string[][],
): RawBuilder<unknown> {
  return sql.join(
    key.map((k, i) => sql`${sql.id(alias, k)} = ANY(${distinct(keys.map((row) => row[i]!))})`),
    sql` AND `,
  )
}

/** `(alias.k1, alias.k2) > ($1, $2)`, for keyset pagination. */
export function keyAfter(
  key: readonly string[],
  alias: string,
  after: readonly string[],
): RawBuilder<unknown> {
  if (key.length === 1) return sql`${sql.id(alias, key[0]!)} > ${after[0]!}`
  return sql`(${keyColumns(key, alias)}) > (${sql.join(after.map((v) => sql`${v}`))})`
}

/** Key values as `(k1)=(v1)` for messages, the way PostgreSQL prints them. */
export function describeKey(key: readonly string[], values: readonly string[]): string {
  return `(${key.join(', ')})=(${values.join(', ')})`
}

function distinct(values: string[]): string[] {
  return [...new Set(values)]
}
