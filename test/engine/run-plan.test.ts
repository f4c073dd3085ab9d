import { describe, expect, it } from 'vitest'
import type { ViewState } from '../../src/catalog/view-rows.js'
import { planRun, type RunPlan } from '../../src/engine/run-plan.js'

// What a view's run does, for every catalog state × same/changed definition × kept by key or by
// rebuilds only. No database: the runner, its lock step, the worker, verify, status and
// `rebuild --all-changed` all act on this answer.

type Expected = Pick<RunPlan, 'action' | 'work' | 'rebuildOwed' | 'comparable'> & {
  refusal?: RegExp
}

const cases: [ViewState | undefined, boolean, boolean, Expected][] = [
  // state, same definition, rebuild only, expected
  [
    undefined,
    false,
    false,
    { action: 'create', work: 'always', rebuildOwed: false, comparable: false },
  ],
  [
    undefined,
    false,
    true,
    { action: 'create', work: 'always', rebuildOwed: false, comparable: false },
  ],
  [
    'building',
    true,
    false,
    { action: 'backfill', work: 'always', rebuildOwed: false, comparable: false },
  ],
  [
    'building',
    true,
    true,
    { action: 'backfill', work: 'always', rebuildOwed: false, comparable: false },
  ],
  [
    'building',
    false,
    false,
    { action: 'restart', work: 'always', rebuildOwed: true, comparable: false },
  ],
  [
    'building',
    false,
    true,
    { action: 'restart', work: 'always', rebuildOwed: true, comparable: false },
  ],
  [
    'ready',
    true,
    false,
    { action: 'apply', work: 'if-pending', rebuildOwed: false, comparable: true },
  ],
  [
    'ready',
    true,
    true,
    { action: 'rebuild', work: 'if-pending', rebuildOwed: false, comparable: true },
  ],
  [
    'ready',
    false,
    false,
    {
      action: 'refuse',
      work: 'never',
      rebuildOwed: true,
      comparable: false,
      refusal: /its definition changed since the view was created; run "matview rebuild v"/,
    },
  ],
  [
    'ready',
    false,
    true,
    {
      action: 'refuse',
      work: 'never',
      rebuildOwed: true,
      comparable: false,
      refusal: /its definition changed/,
    },
  ],
  // The audit's finding 10: a rebuild of the same definition stopped half-way has work to do.
  [
    'rebuilding',
    true,
    false,
    { action: 'finish-rebuild', work: 'always', rebuildOwed: true, comparable: false },
  ],
  [
    'rebuilding',
    true,
    true,
    { action: 'finish-rebuild', work: 'always', rebuildOwed: true, comparable: false },
  ],
  [
    'rebuilding',
    false,
    false,
    {
      action: 'refuse',
      work: 'never',
      rebuildOwed: true,
      comparable: false,
      refusal: /a rebuild was started and has not finished; run "matview rebuild v" to finish it/,
    },
  ],
  [
    'rebuilding',
    false,
    true,
    {
      action: 'refuse',
      work: 'never',
      rebuildOwed: true,
      comparable: false,
      refusal: /a rebuild was started/,
    },
  ],
  [
    'needs_rebuild',
    true,
    false,
    {
      action: 'refuse',
      work: 'never',
      rebuildOwed: true,
      comparable: false,
      refusal: /needs a rebuild \(orders was truncated\); run "matview rebuild v"/,
    },
  ],
  // Kept by rebuilds anyway: a truncated source is one more reason to rebuild, at once.
  [
    'needs_rebuild',
    true,
    true,
    { action: 'rebuild', work: 'always', rebuildOwed: true, comparable: false },
  ],
  [
    'needs_rebuild',
    false,
    false,
    {
      action: 'refuse',
      work: 'never',
      rebuildOwed: true,
      comparable: false,
      refusal: /its definition changed/,
    },
  ],
  [
    'needs_rebuild',
    false,
    true,
    {
      action: 'refuse',
      work: 'never',
      rebuildOwed: true,
      comparable: false,
      refusal: /its definition changed/,
    },
  ],
]

describe('planRun', () => {
  it.each(cases)(
    'state %s, same definition %s, rebuild only %s',
    (state, same, rebuildOnly, expected) => {
      const plan = planRun(
        { view: 'v', state, sameDefinition: same, stateReason: 'orders was truncated' },
        { rebuildOnly },
      )
      const { refusal, ...rest } = expected
      expect(plan).toMatchObject(rest)
      if (refusal) expect(plan.refusal?.reason).toMatch(refusal)
      else expect(plan.refusal).toBeUndefined()
      // A refused run has a reason; a run with work has none.
      expect(plan.action === 'refuse').toBe(plan.refusal !== undefined)
    },
  )

  it('only a definition change carries the code DEFINITION_CHANGED', () => {
    const changed = planRun(
      { view: 'v', state: 'ready', sameDefinition: false },
      { rebuildOnly: false },
    )
    expect(changed.refusal?.code).toBe('DEFINITION_CHANGED')
    const truncated = planRun(
      { view: 'v', state: 'needs_rebuild', sameDefinition: true },
      { rebuildOnly: false },
    )
    expect(truncated.refusal?.code).toBeUndefined()
    expect(truncated.refusal?.reason).toBe('needs a rebuild; run "matview rebuild v"')
  })
})
