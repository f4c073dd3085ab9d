import { describe, expect, it } from 'vitest'
import { defineHandwrittenView, MaterializedView, resolveConfig } from '../../src/index.js'

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
    expect(resolveConfig(file, { env: { DATABASE_URL: 'postgres://a/b' } }).database).toBe(
      'postgres://a/b',
    )
    expect(
      resolveConfig(file, {
        env: { DATABASE_URL: 'postgres://a/b', MATVIEW_DATABASE_URL: 'postgres://c/d' },
      }).database,
    ).toBe('postgres://c/d')
    expect(
      resolveConfig(file, { env: { MATVIEW_DATABASE_URL: 'postgres://c/d' }, database: 'pglite:x' })
        .database,
    ).toBe('pglite:x')
  })

  it('names the bad field', () => {
    expect(() => resolveConfig({ batchSize: 0 }, { env: {} })).toThrow(
      /batchSize: must be at least 1/,
    )
    expect(() => resolveConfig({ batchSize: 'x' }, { env: {} })).toThrow(
      /batchSize: must be a number/,
    )
    expect(() => resolveConfig({ batchsize: 10 }, { env: {} })).toThrow(/unknown field "batchsize"/)
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
