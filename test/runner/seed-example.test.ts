import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createTables, TagCounts, tagCountsQuery } from '../../examples/tag-counts/tag-counts.js'
import { Matview } from '../../src/index.js'
import { queryDifferences as differences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

describe.each(DIALECTS)('the seed example (tag_counts) on %s', (dialect) => {
  const database = useTestDatabase(dialect)

  it('keeps the cached table equal to what it caches through inserts, updates and deletes', async () => {
    await createTables(database.db)
    await sql`INSERT INTO posts (tag) SELECT 'tag' || (g % 37) FROM generate_series(1, 500) g`.execute(
      database.db,
    )
    const mv = await Matview.open({ database, batchSize: 10, views: [TagCounts] })
    const check = async () =>
      expect(
        await differences(database.db, 'tag_counts', tagCountsQuery, ['tag', 'post_count']),
      ).toEqual({
        extra: [],
        missing: [],
      })

    expect((await mv.update()).views[0]).toMatchObject({
      view: 'tag_counts',
      outcome: 'done',
      inserted: 37,
      batches: 4,
    })
    await check()

    await sql`INSERT INTO posts (tag) VALUES ('tag1'), ('tag2'), ('brand-new')`.execute(database.db)
    await sql`DELETE FROM posts WHERE tag = 'tag5'`.execute(database.db)
    expect((await mv.update()).views[0]).toMatchObject({
      outcome: 'done',
      inserted: 1,
      updated: 2,
      deleted: 1,
    })
    await check()
    await mv.close()
  })
})
