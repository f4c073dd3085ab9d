import { type Kysely, sql } from 'kysely'

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
