import { describe, expect, it } from 'vitest'
import {
  defineHandwrittenView,
  defineView,
  MaterializedView,
  resolveConfig,
  sql,
} from '../../src/index.js'
import { customerTotals } from '../support/views.js'

const view = defineHandwrittenView({ name: 'v', needsInsert: () => 0, doInsert: () => 0 })

describe('config', () => {
  it('applies defaults', () => {
    const config = resolveConfig({}, { env: {} })
    expect(config).toMatchObject({
      database: 'pglite:.matview/pglite',
      schema: 'matview',
      batchSize: 1000,
      views: [],
    })
  })

  it('lets env vars override the file and flags override both', () => {
    const file = { database: 'pglite:memory' }
    const configFile = '/app/matview.config.ts'
    expect(
      resolveConfig(file, { env: { DATABASE_URL: 'postgres://a/b' }, configFile }),
    ).toMatchObject({ database: 'postgres://a/b', databaseFrom: 'DATABASE_URL' })
    expect(
      resolveConfig(file, {
        env: { DATABASE_URL: 'postgres://a/b', MATVIEW_DATABASE_URL: 'postgres://c/d' },
        configFile,
      }).database,
    ).toBe('postgres://c/d')
    expect(
      resolveConfig(file, {
        env: { MATVIEW_DATABASE_URL: 'postgres://c/d' },
        database: 'pglite:x',
        configFile,
      }).database,
    ).toBe('pglite:x')
    expect(resolveConfig(file, { env: {}, configFile })).toMatchObject({
      database: 'pglite:memory',
      databaseFrom: `config ${configFile}`,
    })
  })

  it('lets a database given in code win over the environment (only --database beats it)', () => {
    const env = { DATABASE_URL: 'postgres://a/b', MATVIEW_DATABASE_URL: 'postgres://c/d' }
    expect(resolveConfig({ database: 'pglite:memory' }, { env })).toMatchObject({
      database: 'pglite:memory',
      databaseFrom: 'the database option',
    })
    expect(
      resolveConfig({ database: 'pglite:memory' }, { env, database: 'pglite:x' }).database,
    ).toBe('pglite:x')
    // No database in code: the environment, as before.
    expect(resolveConfig({}, { env }).database).toBe('postgres://c/d')
  })

  it('names the bad field', () => {
    expect(() => resolveConfig({ batchSize: 0 }, { env: {} })).toThrow(
      /batchSize: must be at least 1/,
    )
    expect(() => resolveConfig({ batchSize: 'x' }, { env: {} })).toThrow(
      /batchSize: must be a number/,
    )
    expect(() => resolveConfig({ batchsize: 10 }, { env: {} })).toThrow(
      /unknown field "batchsize" \(did you mean batchSize\?\)/,
    )
    // In a view, as at the top level; the misspelling first (it also leaves `sources` missing).
    expect(() =>
      resolveConfig(
        { views: [{ ...customerTotals, sources: undefined, soruces: customerTotals.sources }] },
        { env: {} },
      ),
    ).toThrow(
      /^config: unknown field "soruces" in views\.0 \(did you mean sources\?\); known fields of a declarative view: kind, /,
    )
    expect(() =>
      resolveConfig({ views: [{ ...view, neddsUpdate: () => 0 }] }, { env: {} }),
    ).toThrow(/unknown field "neddsUpdate" in views\.0 \(did you mean needsUpdate\?\)/)
    expect(() => resolveConfig({ views: [{ ...view, zzz: 1 }] }, { env: {} })).toThrow(
      /unknown field "zzz" in views\.0; known fields of a hand-written view: kind, name/,
    )
    expect(() =>
      resolveConfig({ views: [{ ...customerTotals, key: undefined }] }, { env: {} }),
    ).toThrow(/^config: views\.0\.key: is missing$/)
    expect(() =>
      resolveConfig(
        { views: [{ kind: 'handwritten', name: 'a', needsInsert: () => 0 }] },
        { env: {} },
      ),
    ).toThrow(/views\.0\.doInsert: is missing/)
    expect(() => resolveConfig({ views: [view, view] }, { env: {} })).toThrow(
      /two views are named "v"/,
    )
  })

  it("reads a view's own strategy 'rebuild' and refuses any other, naming the field", () => {
    const base = {
      name: 'v',
      key: ['id'],
      query: sql`SELECT 1 AS id`,
      sources: { t: { id: 'id' } },
    }
    const config = resolveConfig(
      { views: [defineView({ ...base, strategy: 'rebuild' })] },
      { env: {} },
    )
    expect(config.views[0]).toMatchObject({ strategy: 'rebuild' })
    for (const value of ['incremental', 'fast', 1])
      expect(() =>
        resolveConfig(
          { views: [defineView({ ...base, strategy: value as 'rebuild' })] },
          { env: {} },
        ),
      ).toThrow(
        /^config: views\.0\.strategy: must be 'rebuild' \(keep the view by rebuilds only\) or left out \(the config's strategy\)$/,
      )
  })

  it('reads strategy and rebuildShare, auto and 0.15 by default, and refuses bad ones naming them', () => {
    expect(resolveConfig({}, { env: {} })).toMatchObject({ strategy: 'auto', rebuildShare: 0.15 })
    expect(
      resolveConfig({ strategy: 'incremental', rebuildShare: 0.5 }, { env: {} }),
    ).toMatchObject({ strategy: 'incremental', rebuildShare: 0.5 })
    expect(() => resolveConfig({ strategy: 'fast' }, { env: {} })).toThrow(
      /strategy: must be "incremental", "rebuild" or "auto"/,
    )
    expect(() => resolveConfig({ rebuildShare: 0 }, { env: {} })).toThrow(
      /rebuildShare: must be more than 0/,
    )
    expect(() => resolveConfig({ rebuildShare: 20 }, { env: {} })).toThrow(
      /rebuildShare: must be at most 1/,
    )
  })

  it('reads keepRuns as a duration, 30 days by default, and refuses a bad one naming it', () => {
    expect(resolveConfig({}, { env: {} }).keepRunsMs).toBe(30 * 24 * 3600 * 1000)
    expect(resolveConfig({ keepRuns: '12h' }, { env: {} }).keepRunsMs).toBe(12 * 3600 * 1000)
    expect(resolveConfig({ keepRuns: 90_000 }, { env: {} }).keepRunsMs).toBe(90_000)
    expect(() => resolveConfig({ keepRuns: 'a month' }, { env: {} })).toThrow(
      /^config: keepRuns: must be a duration such as 30d, 12h or 90m$/,
    )
    // A bare number is milliseconds: 30 meant as days would delete the whole history.
    expect(() => resolveConfig({ keepRuns: 30 }, { env: {} })).toThrow(
      /^config: keepRuns: must be at least 1m \(a bare number is milliseconds\)$/,
    )
    expect(() => resolveConfig({ keepRuns: true }, { env: {} })).toThrow(
      /^config: keepRuns: must be a duration such as 30d, 12h or 90m$/,
    )
  })

  it('accepts the Django-style class form', () => {
    class TagCounts extends MaterializedView {
      static async needsInsert() {
        return 0
      }
      static async doInsert() {
        return 0
      }
    }
    const config = resolveConfig({ views: [TagCounts] }, { env: {} })
    expect(config.views[0]).toMatchObject({ kind: 'handwritten', name: 'tag_counts' })
  })
})
