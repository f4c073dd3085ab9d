import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createTables, tagCountsQuery } from '../../examples/tag-counts/tag-counts.js'
import { Matview, type MatviewConfig } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

/** The README's hand-written example, as a user would copy it into matview.config.ts. */
async function readmeConfig(): Promise<MatviewConfig> {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('## A hand-written view'))
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
  if (!code) throw new Error('no TypeScript block under "## A hand-written view" in README.md')
  const file = join(mkdtempSync(join(tmpdir(), 'matview-readme-')), 'matview.config.ts')
  writeFileSync(file, code)
  return ((await import(file)) as { default: MatviewConfig }).default
}

describe.each(DIALECTS)("the README's hand-written view on %s", (dialect) => {
  const database = useTestDatabase(dialect)

  it('keeps tag_counts equal to what it caches through inserts, updates and deletes', async () => {
    const config = await readmeConfig()
    await createTables(database.db)
    const mv = await Matview.open({ database, batchSize: 2, views: config.views ?? [] })
    const expectInSync = async () => {
      const [result] = (await mv.update()).views
      expect([result!.outcome, result!.error]).toEqual(['done', undefined])
      expect(
        await queryDifferences(database.db, 'tag_counts', tagCountsQuery, ['tag', 'post_count']),
      ).toEqual({ extra: [], missing: [] })
    }
    try {
      await sql`INSERT INTO posts (tag) SELECT 't' || (i % 7) FROM generate_series(1, 100) AS i`.execute(
        database.db,
      )
      await expectInSync()
      await sql`UPDATE posts SET tag = 't1' WHERE id % 3 = 0`.execute(database.db)
      await expectInSync()
      await sql`DELETE FROM posts WHERE tag IN ('t2', 't4')`.execute(database.db)
      await expectInSync()
    } finally {
      await mv.close()
    }
  })
})
