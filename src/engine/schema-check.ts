import { type Kysely, sql } from 'kysely'
import { markOwnDdl } from './capture-ddl.js'
import { type QualifiedTable, tableRef, viewObjects } from './names.js'

/**
 * Checks a view's sources against the database (the catalog's `check_sources`, see
 * src/catalog/schema-watch.ts): one statement, run at the start of every run whether or not
 * event triggers watch the schema too. With `repair` it puts the capture on partitions that
 * lack it, stops a capture that would fail writers, and marks the view; without, it only says
 * what it would mark (for `status`). Returns the reasons the view needs a rebuild.
 */
export async function checkSources(
  db: Kysely<any>,
  catalog: string,
  view: string,
  repair: boolean,
): Promise<string[]> {
  const { rows } = await sql<{ reasons: string[] | null }>`
    SELECT ${sql.id(catalog, 'check_sources')}(${view}, NULL, NULL, ${repair}) AS reasons`.execute(
    db,
  )
  return rows[0]?.reasons ?? []
}

const EVENTS = ['insert', 'update', 'delete', 'truncate'] as const

/**
 * Drops the capture triggers of view objects `id` wherever they are: on the sources, their
 * partitions, children and parents, and on a source renamed or replaced since (found by trigger
 * name in pg_trigger, not by the source's name, which may now be another table's).
 */
export async function dropCaptureTriggers(
  trx: Kysely<any>,
  catalog: string,
  id: number,
  positions: readonly number[],
): Promise<void> {
  if (positions.length === 0) return
  await markOwnDdl(trx)
  const objects = viewObjects(catalog, id)
  const names = positions.flatMap((p) => EVENTS.map((e) => objects.trigger(p, e)))
  const { rows } = await sql<QualifiedTable & { name: string }>`
    SELECT t.tgname AS name, n.nspname AS schema, c.relname AS table
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE t.tgname = ANY (${names}::text[]) AND NOT t.tgisinternal
    ORDER BY c.oid, t.tgname`.execute(trx)
  for (const row of rows) {
    await sql`DROP TRIGGER IF EXISTS ${sql.id(row.name)} ON ${tableRef(row)}`.execute(trx)
  }
}
