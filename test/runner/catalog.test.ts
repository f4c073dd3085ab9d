import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { CATALOG_VERSION, CatalogVersionError, Matview } from '../../src/index.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

describe.each(DIALECTS)('the catalog on %s', (dialect) => {
  const database = useTestDatabase(dialect)

  it('is created on first use in the configured schema, once, and refused when newer than the code', async () => {
    const first = await Matview.open({ database, schema: 'mv catalog' })
    const second = await Matview.open({ database, schema: 'mv catalog' })
    const { rows } = await sql<{
      version: number
    }>`SELECT version FROM "mv catalog".catalog_version ORDER BY version`.execute(database.db)
    // Every migration applied exactly once, though two opened it.
    expect(rows.map((r) => Number(r.version))).toEqual(
      Array.from({ length: CATALOG_VERSION }, (_, i) => i + 1),
    )
    await first.close()
    await second.close()

    await sql`INSERT INTO "mv catalog".catalog_version (version, description) VALUES (${CATALOG_VERSION + 1}, 'future')`.execute(
      database.db,
    )
    const opening = Matview.open({ database, schema: 'mv catalog' })
    await expect(opening).rejects.toBeInstanceOf(CatalogVersionError)
    await expect(opening).rejects.toThrow(/newer than this matview supports .*; upgrade matview/)
  })

  it('works on a Kysely instance the application already has, and leaves it open', async () => {
    const mv = await Matview.open({ database: database.db, schema: 'app_matview' })
    expect(await mv.status()).toEqual([])
    await mv.close()
    const { rows } = await sql<{ one: number }>`SELECT 1 AS one`.execute(database.db)
    expect(rows[0]!.one).toBe(1)
  })
})
