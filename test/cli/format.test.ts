import { describe, expect, it } from 'vitest'
import type { RunRecord } from '../../src/catalog/runs.js'
import { formatStatusTable } from '../../src/cli/commands/status.js'
import { formatVerifyResult } from '../../src/cli/commands/verify.js'
import { formatResult, formatRun } from '../../src/cli/output/format.js'
import { checkProblem, type ViewStatus } from '../../src/runner/status.js'

// The lines the CLI prints, without a database: numbers one way (12,345), reasons said once.

const run = (extra: Partial<RunRecord> = {}): RunRecord => ({
  id: 1,
  view: 'v',
  startedAt: new Date(Date.now() - 60_000),
  finishedAt: new Date(Date.now() - 1000),
  outcome: 'done',
  inserted: 12_345,
  updated: 0,
  deleted: 0,
  batches: 1_234,
  error: null,
  host: 'h',
  pid: 1,
  ...extra,
})

describe('CLI formats', () => {
  it('prints every count with thousands separators', () => {
    const status: ViewStatus = {
      name: 'v',
      kind: 'declarative',
      state: 'ready',
      stateReason: null,
      lastRun: run(),
      pending: { total: 23_456, detail: { keys: 23_456 }, lagSeconds: 1, targetRows: 1_234_567 },
      running: false,
      overMaxLag: false,
      setAside: 2_000,
    }
    const table = formatStatusTable([status])
    expect(table).toContain('1,234,567')
    expect(table).toContain('23,456 (keys 23,456)')
    expect(table).toContain('+12,345 ~0 -0 in 1,234 batches')
    expect(checkProblem(status)).toBe('2,000 keys set aside')
  })

  it('says an idle stretch did nothing, from its last check', () => {
    expect(formatRun(run({ inserted: 0, batches: 0 }))).toMatch(
      /^1(\.\d)?s ago, done, nothing to do$/,
    )
  })

  it('does not repeat a reason that is the outcome', () => {
    const base = { view: 'v', kind: 'declarative' as const, inserted: 1, updated: 0, deleted: 0 }
    expect(
      formatResult({
        ...base,
        batches: 1,
        outcome: 'interrupted',
        reason: 'interrupted',
        durationMs: 5,
      }),
    ).toBe('v: interrupted, +1 ~0 -0 in 1 batch, 5ms')
    expect(
      formatResult({
        ...base,
        batches: 0,
        outcome: 'interrupted',
        reason: 'interrupted, not started',
        durationMs: 0,
      }),
    ).toMatch(/^v: interrupted \(not started\), /)
    expect(
      formatVerifyResult({
        view: 'v',
        outcome: 'interrupted',
        reason: 'interrupted',
        durationMs: 5,
      } as never),
    ).toBe('v: interrupted')
  })
})
