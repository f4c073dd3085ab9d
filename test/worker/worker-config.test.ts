import { describe, expect, it } from 'vitest'
import {
  ConfigError,
  defineHandwrittenView,
  defineView,
  MaterializedView,
  resolveConfig,
  sql,
} from '../../src/index.js'
import { backoffMs, viewTiming } from '../../src/worker/view-timing.js'

// The worker's per-view fields (`schedule`, `every`, `onChange`, `maxLag`): checked by the
// config schema with one line naming the view's field, and accepted by every way to write a view.

const hooks = { needsInsert: () => 0, doInsert: () => 0 }
const declarative = {
  name: 'd',
  key: ['id'],
  query: sql`SELECT 1 AS id`,
  sources: { t: { id: 'id' } },
}

function problem(timing: Record<string, unknown>): string {
  try {
    resolveConfig({ views: [defineView({ ...declarative, ...timing })] }, { env: {} })
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return (error as Error).message
  }
  return 'accepted'
}

describe('worker fields in the config', () => {
  it('accepts each form, on declarative, hand-written and class views', () => {
    class Nightly extends MaterializedView {
      static override schedule = '0 3 * * *'
      static override maxLag = '1d'
      static needsInsert = () => 0
      static doInsert = () => 0
    }
    const config = resolveConfig(
      {
        views: [
          defineView({ ...declarative, schedule: '*/5 * * * *', maxLag: '10m' }),
          defineHandwrittenView({ name: 'h', every: '30s', ...hooks }),
          defineHandwrittenView({ name: 'h2', onChange: { debounce: '500ms' }, ...hooks }),
          Nightly,
        ],
      },
      { env: {} },
    )
    expect(config.views.map((v) => viewTiming(v).mode)).toEqual([
      'schedule',
      'every',
      'change',
      'schedule',
    ])
    expect(config.views[3]).toMatchObject({ name: 'nightly', maxLag: '1d' })
    expect(viewTiming(config.views[2]!)).toEqual({ mode: 'change', debounceMs: 500 })
  })

  it('defaults to on change', () => {
    expect(viewTiming(defineView(declarative))).toEqual({ mode: 'change', debounceMs: 250 })
  })

  it('names the view field that is wrong and what it wants', () => {
    expect(problem({ schedule: '*/5 * * *' })).toMatch(
      /^config: views\.0\.schedule: must be a cron expression such as '\*\/5 \* \* \* \*' \(.*five, six, or seven/,
    )
    expect(problem({ schedule: 5 })).toMatch(/views\.0\.schedule: must be a cron expression/)
    expect(problem({ every: 'soon' })).toBe(
      "config: views.0.every: must be a duration more than 0 such as '30s'",
    )
    expect(problem({ every: 0 })).toMatch(/views\.0\.every: must be a duration more than 0/)
    expect(problem({ maxLag: '-1m' })).toMatch(/views\.0\.maxLag: must be a duration/)
    expect(problem({ onChange: 'yes' })).toBe(
      "config: views.0.onChange: must be true or { debounce: '500ms' }",
    )
    expect(problem({ onChange: { debounce: 'later' } })).toMatch(
      /views\.0\.onChange\.debounce: must be a duration such as '500ms'/,
    )
    expect(problem({ every: '30s', schedule: '* * * * *' })).toBe(
      'config: views.0.every: cannot be combined with schedule: give one of schedule, every, onChange',
    )
    expect(problem({ onChange: { debounce: '0ms' } })).toBe('accepted')
  })

  it('backs off exponentially, with jitter, up to 5 minutes', () => {
    expect([1, 2, 3, 4].map((n) => backoffMs(n, () => 1))).toEqual([1000, 2000, 4000, 8000])
    expect([1, 2, 3].map((n) => backoffMs(n, () => 0))).toEqual([500, 1000, 2000])
    expect(backoffMs(30, () => 1)).toBe(300_000)
  })
})
