import { type Kysely, type RawBuilder, sql } from 'kysely'
import { type QualifiedTable, tableRef } from '../names.js'

/**
 * What the live target carries besides its rows and must keep across the swap: owner, grants
 * (table and column), comments, and index names. Read from the old table before it is dropped,
 * applied to the shadow once it has the old name.
 */
export interface TableDressing {
  owner: string
  grants: Grant[]
  comment: string | null
  columnComments: { column: string; comment: string }[]
  indexes: IndexInfo[]
}

interface Grant {
  privilege: string
  /** A role name, or null for PUBLIC. */
  grantee: string | null
  grantable: boolean
  /** A column grant's column. */
  column: string | null
}

export interface IndexInfo {
  name: string
  primary: boolean
  /** `unique btree (a, b) WHERE …`: the same on two tables for the same index. */
  signature: string | undefined
  columns: string[]
}

// The privileges GRANT knows, as SQL keywords: a privilege read from the catalog is looked up
// here, never written into SQL as text.
const PRIVILEGES: Record<string, RawBuilder<unknown>> = {
  SELECT: sql`SELECT`,
  INSERT: sql`INSERT`,
  UPDATE: sql`UPDATE`,
  DELETE: sql`DELETE`,
  TRUNCATE: sql`TRUNCATE`,
  REFERENCES: sql`REFERENCES`,
  TRIGGER: sql`TRIGGER`,
  MAINTAIN: sql`MAINTAIN`,
}

export async function readDressing(db: Kysely<any>, oid: string): Promise<TableDressing> {
  const { rows: meta } = await sql<{ owner: string; comment: string | null }>`
    SELECT pg_catalog.pg_get_userbyid(relowner) AS owner,
           pg_catalog.obj_description(oid, 'pg_class') AS comment
    FROM pg_catalog.pg_class WHERE oid = ${oid}::int8::oid`.execute(db)
  // Grants to roles dropped since cannot be given again; PUBLIC is grantee 0.
  const { rows: grants } = await sql<Grant>`
    SELECT a.privilege_type AS privilege, a.is_grantable AS grantable,
           CASE WHEN a.grantee = 0 THEN NULL ELSE r.rolname::text END AS grantee, NULL::text AS column
    FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) AS a
    LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
    WHERE c.oid = ${oid}::int8::oid AND (a.grantee = 0 OR r.rolname IS NOT NULL)
    UNION ALL
    SELECT a.privilege_type, a.is_grantable,
           CASE WHEN a.grantee = 0 THEN NULL ELSE r.rolname::text END, att.attname::text
    FROM pg_catalog.pg_attribute att, pg_catalog.aclexplode(att.attacl) AS a
    LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
    WHERE att.attrelid = ${oid}::int8::oid AND att.attnum > 0 AND NOT att.attisdropped
      AND (a.grantee = 0 OR r.rolname IS NOT NULL)`.execute(db)
  const { rows: columnComments } = await sql<{ column: string; comment: string }>`
    SELECT attname::text AS column, pg_catalog.col_description(attrelid, attnum) AS comment
    FROM pg_catalog.pg_attribute
    WHERE attrelid = ${oid}::int8::oid AND attnum > 0 AND NOT attisdropped
      AND pg_catalog.col_description(attrelid, attnum) IS NOT NULL`.execute(db)
  return {
    owner: meta[0]!.owner,
    comment: meta[0]!.comment,
    grants,
    columnComments,
    indexes: await indexesOf(db, oid),
  }
}

/** The indexes of a table, with a signature that does not depend on their or the table's name. */
export async function indexesOf(db: Kysely<any>, oid: string): Promise<IndexInfo[]> {
  const { rows } = await sql<{
    name: string
    primary: boolean
    definition: string
    prefix: string
    columns: unknown
  }>`
    SELECT ic.relname::text AS name, i.indisprimary AS primary,
           pg_catalog.pg_get_indexdef(i.indexrelid) AS definition,
           format('CREATE %sINDEX %I ON %I.%I USING ', CASE WHEN i.indisunique THEN 'UNIQUE ' END,
                  ic.relname, n.nspname, c.relname) AS prefix,
           to_jsonb(ARRAY(SELECT coalesce(a.attname::text, 'expr')
                          FROM generate_series(0, i.indnkeyatts - 1) AS g
                          LEFT JOIN pg_catalog.pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = i.indkey[g]
                          ORDER BY g)) AS columns
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE i.indrelid = ${oid}::int8::oid
    ORDER BY ic.relname`.execute(db)
  return rows.map((row) => ({
    name: row.name,
    primary: row.primary,
    // pg_get_indexdef starts with exactly this prefix; the rest (method, columns, predicate)
    // names neither the index nor the table.
    signature: row.definition.startsWith(row.prefix)
      ? `${row.primary ? 'primary ' : ''}${row.prefix.startsWith('CREATE UNIQUE') ? 'unique ' : ''}${row.definition.slice(row.prefix.length)}`
      : undefined,
    columns: (typeof row.columns === 'string' ? JSON.parse(row.columns) : row.columns) as string[],
  }))
}

/**
 * Gives the renamed shadow the old table's dressing. Its indexes (the key's and the
 * definition's) take the names of the old indexes they equal, or the name PostgreSQL would
 * choose; an old index the new definition does not have is reported, not rebuilt (indexes come
 * from the definition). Returns notes for the result line.
 */
export async function applyDressing(
  trx: Kysely<any>,
  table: QualifiedTable,
  oid: string,
  columns: readonly string[],
  dressing: TableDressing,
): Promise<string[]> {
  const notes = await renameIndexes(trx, table, oid, dressing.indexes)
  const target = tableRef(table)
  const { rows } = await sql<{ owner: string }>`
    SELECT pg_catalog.pg_get_userbyid(relowner) AS owner
    FROM pg_catalog.pg_class WHERE oid = ${oid}::int8::oid`.execute(trx)
  if (rows[0]!.owner !== dressing.owner) {
    // Whoever could drop the old table may give the new one to its owner.
    await sql`ALTER TABLE ${target} OWNER TO ${sql.id(dressing.owner)}`.execute(trx)
  }
  const have = new Set(columns)
  for (const grant of dressing.grants) {
    const privilege = PRIVILEGES[grant.privilege]
    // The owner holds every privilege on its own table; a dropped column takes its grants.
    if (!privilege || grant.grantee === dressing.owner) continue
    if (grant.column !== null && !have.has(grant.column)) continue
    const on = grant.column === null ? privilege : sql`${privilege} (${sql.id(grant.column)})`
    const to = grant.grantee === null ? sql`PUBLIC` : sql.id(grant.grantee)
    const option = grant.grantable && grant.grantee !== null ? sql`WITH GRANT OPTION` : sql``
    await sql`GRANT ${on} ON TABLE ${target} TO ${to} ${option}`.execute(trx)
  }
  if (dressing.comment !== null) {
    await sql`COMMENT ON TABLE ${target} IS ${sql.lit(dressing.comment)}`.execute(trx)
  }
  for (const { column, comment } of dressing.columnComments) {
    if (!have.has(column)) continue
    await sql`COMMENT ON COLUMN ${sql.id(table.schema, table.table, column)} IS ${sql.lit(comment)}`.execute(
      trx,
    )
  }
  return notes
}

async function renameIndexes(
  trx: Kysely<any>,
  table: QualifiedTable,
  oid: string,
  old: IndexInfo[],
): Promise<string[]> {
  const unclaimed = [...old]
  const unnamed: IndexInfo[] = []
  for (const index of await indexesOf(trx, oid)) {
    const at = unclaimed.findIndex((o) => o.signature && o.signature === index.signature)
    if (at < 0) {
      unnamed.push(index)
      continue
    }
    await renameIndex(trx, table.schema, index.name, unclaimed[at]!.name)
    unclaimed.splice(at, 1)
  }
  // After the old names are taken, so a new name never takes one an old index had.
  for (const index of unnamed) {
    const suffix = index.primary ? 'pkey' : 'idx'
    const base = index.primary ? table.table : `${table.table}_${index.columns.join('_')}`
    await renameIndex(
      trx,
      table.schema,
      index.name,
      await freeName(trx, table.schema, base, suffix),
    )
  }
  return unclaimed
    .filter((o) => !o.primary)
    .map((o) => `index "${o.name}" dropped: not in the definition`)
}

async function renameIndex(trx: Kysely<any>, schema: string, from: string, to: string) {
  if (from === to) return
  // Renaming a key's index renames its constraint too.
  await sql`ALTER INDEX ${sql.id(schema, from)} RENAME TO ${sql.id(to)}`.execute(trx)
}

/** `base_suffix`, cut to PostgreSQL's 63 bytes, with a number added while the name is taken. */
async function freeName(trx: Kysely<any>, schema: string, base: string, suffix: string) {
  for (let n = 0; ; n++) {
    const tail = `_${suffix}${n === 0 ? '' : n}`
    const name = cutToBytes(base, 63 - Buffer.byteLength(tail)) + tail
    const { rows } = await sql`
      SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${schema} AND c.relname = ${name}`.execute(trx)
    if (rows.length === 0) return name
  }
}

function cutToBytes(text: string, limit: number): string {
  let out = ''
  for (const char of text) {
    if (Buffer.byteLength(out + char) > limit) break
    out += char
  }
  return out
}
