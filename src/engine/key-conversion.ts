import { type Kysely, sql } from 'kysely'

/**
 * Why a column map's conversion from a source column to its key column is refused, or
 * undefined when it is safe. The capture converts in the writer's session, inside a `SECURITY
 * DEFINER` function; the query computes the key in matview's own session. So the conversion
 * must give the same key in every session and run nothing the application can define:
 *
 * - the same type (or a domain over it: read as its base type, no check runs), or
 * - two built-in types and a built-in implicit or assignment cast that is binary-coercible or an
 *   immutable built-in function (int4 to int8, float4 to float8, varchar to text), or
 * - the I/O conversion to text or varchar of an integer, numeric, uuid or boolean, whose text
 *   form no session setting changes.
 *
 * Refused: a stable cast (timestamptz to date depends on TimeZone, to text on DateStyle), an
 * other I/O conversion (float8 to text depends on extra_float_digits), and anything involving a type
 * of the application or an extension: whoever owns a type may create casts from it, and a
 * domain's checks may call its functions, which would run with matview's rights.
 */
export async function unsafeKeyConversion(
  db: Kysely<any>,
  sourceOid: string,
  sourceColumn: string,
  keyType: string,
): Promise<{ cast: boolean; source: string; reason: string } | undefined> {
  const { rows } = await sql<{
    source: string
    key: string
    safe: boolean
    stable: boolean
    cast: boolean
  }>`
    WITH RECURSIVE chain AS (
      SELECT a.atttypid AS type, 0 AS depth FROM pg_catalog.pg_attribute a
      WHERE a.attrelid = ${sourceOid}::int8::oid AND a.attname = ${sourceColumn} AND NOT a.attisdropped
      UNION ALL
      SELECT t.typbasetype, chain.depth + 1 FROM chain
      JOIN pg_catalog.pg_type t ON t.oid = chain.type WHERE t.typtype = 'd'
    ), source AS (
      SELECT (SELECT type FROM chain WHERE depth = 0) AS type,
             (SELECT type FROM chain ORDER BY depth DESC LIMIT 1) AS base
    ), key AS (SELECT ${keyType}::pg_catalog.regtype::pg_catalog.oid AS type),
    cast_ AS (
      SELECT c.castmethod AS method, f.provolatile AS volatility, f.oid AS fn
      FROM pg_catalog.pg_cast c LEFT JOIN pg_catalog.pg_proc f ON f.oid = c.castfunc, source, key
      WHERE c.castsource = source.base AND c.casttarget = key.type AND c.castcontext IN ('a', 'i')
    )
    SELECT pg_catalog.format_type(source.type, NULL) AS source,
           pg_catalog.format_type(key.type, NULL) AS key,
           source.type = key.type OR source.base = key.type OR (
             source.base < 16384 AND key.type < 16384 AND EXISTS (
               SELECT 1 FROM cast_ WHERE method = 'b' OR (method = 'f' AND volatility = 'i' AND fn < 16384))
           ) OR (
             -- The I/O conversion to text of a type whose text form no setting changes.
             NOT EXISTS (SELECT 1 FROM cast_)
             AND source.base = ANY (ARRAY['int2', 'int4', 'int8', 'numeric', 'uuid', 'bool']::pg_catalog.regtype[]::pg_catalog.oid[])
             AND key.type = ANY (ARRAY['text', 'varchar']::pg_catalog.regtype[]::pg_catalog.oid[])
           ) AS safe,
           EXISTS (SELECT 1 FROM cast_ WHERE method = 'f' AND volatility <> 'i') AS stable,
           -- Any assignment at all: a cast, or the I/O conversion to a string type.
           EXISTS (SELECT 1 FROM cast_) OR EXISTS (
             SELECT 1 FROM pg_catalog.pg_type t WHERE t.oid = key.type AND t.typcategory = 'S'
           ) AS cast
    FROM source, key`.execute(db)
  const row = rows[0]
  if (!row || row.safe) return undefined
  if (row.stable)
    return {
      cast: true,
      source: row.source,
      reason: `converting ${row.source} to ${row.key} depends on the session's settings (TimeZone, DateStyle…): a writer's session would log another key than the query computes`,
    }
  return {
    cast: row.cast,
    source: row.source,
    reason: `converting ${row.source} to ${row.key} is not a built-in cast that gives the same result in every session (or it involves a type that is not built in, whose casts and checks would run with matview's rights in the capture)`,
  }
}
