// The seed's example: a cached table (`tag_counts`) fed from another table (`posts`), kept up
// to date by the six hooks of the Django package matview grew from, in its class form.
import { type Kysely, MaterializedView, sql, type ViewContext } from 'matview'

export async function createTables(db: Kysely<any>): Promise<void> {
  await sql`CREATE TABLE posts (id serial PRIMARY KEY, tag text NOT NULL)`.execute(db)
  await sql`CREATE TABLE tag_counts (tag text PRIMARY KEY, post_count bigint NOT NULL)`.execute(db)
}

/** What `tag_counts` caches. */
export const tagCountsQuery = sql`SELECT tag, count(*) AS post_count FROM posts GROUP BY tag`

const missing = sql`SELECT q.* FROM (${tagCountsQuery}) q WHERE NOT EXISTS (SELECT 1 FROM tag_counts t WHERE t.tag = q.tag)`
const stale = sql`SELECT q.* FROM (${tagCountsQuery}) q JOIN tag_counts t USING (tag) WHERE t.post_count <> q.post_count`
const gone = sql`SELECT t.tag FROM tag_counts t WHERE NOT EXISTS (SELECT 1 FROM posts p WHERE p.tag = t.tag)`

async function count(db: Kysely<any>, rows: typeof missing): Promise<number> {
  const { rows: result } = await sql<{ n: string }>`SELECT count(*) AS n FROM (${rows}) r`.execute(
    db,
  )
  return Number(result[0]!.n)
}

export class TagCounts extends MaterializedView {
  static override viewName = 'tag_counts'

  static needsInsert({ db }: ViewContext) {
    return count(db, missing)
  }
  static needsUpdate({ db }: ViewContext) {
    return count(db, stale)
  }
  static needsDelete({ db }: ViewContext) {
    return count(db, gone)
  }
  static async doInsert({ db, batchSize }: ViewContext) {
    const r =
      await sql`INSERT INTO tag_counts SELECT * FROM (${missing}) m ORDER BY tag LIMIT ${batchSize}`.execute(
        db,
      )
    return Number(r.numAffectedRows ?? 0)
  }
  static async doUpdate({ db, batchSize }: ViewContext) {
    const r = await sql`
      UPDATE tag_counts t SET post_count = s.post_count
      FROM (SELECT * FROM (${stale}) s ORDER BY tag LIMIT ${batchSize}) s WHERE t.tag = s.tag`.execute(
      db,
    )
    return Number(r.numAffectedRows ?? 0)
  }
  static async doDelete({ db, batchSize }: ViewContext) {
    const r =
      await sql`DELETE FROM tag_counts WHERE tag IN (SELECT tag FROM (${gone}) g ORDER BY tag LIMIT ${batchSize})`.execute(
        db,
      )
    return Number(r.numAffectedRows ?? 0)
  }
}
