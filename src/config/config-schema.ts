import { Cron } from 'croner'
import { Kysely } from 'kysely'
import { z } from 'zod'
import { isDatabase, isPGlite } from '../dialects/connect.js'
import { isMaterializedViewClass } from '../views/handwritten.js'
import { parseDuration } from './duration.js'

/** The shortest `keepRuns`: a bare number is milliseconds, so `keepRuns: 30` meant as days would
 * otherwise delete the whole history. */
export const MIN_KEEP_RUNS_MS = 60_000

/** The most hash partitions a view's change log may have. */
export const MAX_PARTITIONS = 64

const HOOKS = [
  'needsInsert',
  'needsUpdate',
  'needsDelete',
  'doInsert',
  'doUpdate',
  'doDelete',
] as const

const viewName = z
  .string({ error: 'must be a string' })
  .trim()
  .min(1, { error: 'must not be empty' })
  .max(200, { error: 'must be at most 200 characters' })

// The timing fields are checked by hand rather than by zod types: a type mismatch inside a
// view would fail every branch of the `views` union and lose the field's name.

/** Whether `value` is a duration (more than 0 unless `allowZero`): `'30s'`, `'500ms'`, ms. */
function isDuration(value: unknown, allowZero: boolean): boolean {
  if (typeof value !== 'string' && typeof value !== 'number') return false
  const ms = parseDuration(value)
  return ms !== undefined && (allowZero || ms > 0)
}

/** A duration more than 0: `'30s'`, `'5m'`, `'500ms'` or milliseconds. */
const duration = (example: string) =>
  z
    .unknown()
    .refine((value) => value === undefined || isDuration(value, false), {
      error: `must be a duration more than 0 such as '${example}'`,
    })
    .optional()

/** Why croner refuses the pattern, or undefined when it is a cron expression. */
function cronProblem(pattern: unknown): string | undefined {
  if (typeof pattern !== 'string') return 'not a string'
  try {
    new Cron(pattern, { paused: true })
    return undefined
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  }
}

/** When the worker updates a view (src/views/view-timing.ts). */
const timing = {
  schedule: z
    .unknown()
    .superRefine((pattern, ctx) => {
      const problem = pattern === undefined ? undefined : cronProblem(pattern)
      if (problem)
        ctx.addIssue({
          code: 'custom',
          message: `must be a cron expression such as '*/5 * * * *' (${problem})`,
        })
    })
    .optional(),
  every: duration('30s'),
  onChange: z
    .unknown()
    .superRefine((value, ctx) => {
      if (value === undefined || typeof value === 'boolean') return
      const fields = typeof value === 'object' && value !== null ? Object.keys(value) : ['?']
      if (fields.some((f) => f !== 'debounce')) {
        ctx.addIssue({ code: 'custom', message: "must be true or { debounce: '500ms' }" })
        return
      }
      const debounce = (value as { debounce?: unknown }).debounce
      if (debounce !== undefined && !isDuration(debounce, true))
        ctx.addIssue({
          code: 'custom',
          path: ['debounce'],
          message: "must be a duration such as '500ms'",
        })
    })
    .optional(),
  maxLag: duration('1m'),
}

/** One way to say when: `schedule`, `every` or `onChange`. */
function oneTiming(view: Record<string, unknown>, ctx: z.RefinementCtx): void {
  const given = ['schedule', 'every', 'onChange'].filter(
    (field) => view[field] !== undefined && view[field] !== false,
  )
  if (given.length > 1)
    ctx.addIssue({
      code: 'custom',
      path: [given[1]!],
      message: `cannot be combined with ${given[0]}: give one of schedule, every, onChange`,
    })
}

const handwrittenView = z
  .object({
    kind: z.literal('handwritten'),
    name: viewName,
    dependsOn: z.array(viewName).optional(),
    ...timing,
    ...Object.fromEntries(
      HOOKS.map((hook) => [
        hook,
        z
          .custom((value) => typeof value === 'function', { error: 'must be a function' })
          .optional(),
      ]),
    ),
  })
  // Strict: a misspelt field (`soruces`) is an error naming it, not a field silently ignored.
  .strict()
  .superRefine((view, ctx) => {
    oneTiming(view, ctx)
    const hooks = view as Record<string, unknown>
    for (const [needs, apply] of [
      ['needsInsert', 'doInsert'],
      ['needsUpdate', 'doUpdate'],
      ['needsDelete', 'doDelete'],
    ] as const) {
      if ((hooks[needs] === undefined) !== (hooks[apply] === undefined)) {
        const [has, lacks] = hooks[needs] === undefined ? [apply, needs] : [needs, apply]
        ctx.addIssue({
          code: 'custom',
          path: [lacks],
          message: `is missing: a view with ${has} needs ${lacks} too`,
        })
      }
    }
    if (!HOOKS.some((hook) => hooks[hook] !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: 'has no hooks: give at least needsInsert and doInsert',
      })
    }
  })

const rawSql = z.custom<object>(
  (value) =>
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { compile?: unknown }).compile === 'function',
  { error: 'must be a query written with the sql`…` tag' },
)

const declarativeView = z
  .object({
    kind: z.literal('declarative'),
    ...timing,
    name: viewName,
    key: z
      .array(z.string().min(1), { error: 'must be a list of column names' })
      .min(1, { error: 'must name at least one column' }),
    query: rawSql,
    sources: z
      .record(
        z.string().min(1),
        z.union(
          [
            z.record(
              z.string().min(1),
              z.string({ error: 'must be a column name of the source' }).min(1),
            ),
            rawSql,
          ],
          {
            error:
              'must map view key columns to source columns ({ customer_id: "id" }) or be a sql`…` query over "changed"',
          },
        ),
      )
      .refine((sources) => Object.keys(sources).length > 0, {
        error: 'must name at least one source table',
      }),
    indexes: z.array(z.array(z.string().min(1)).min(1)).optional(),
    // Checked by hand, like the timing fields: a zod number type would lose the field's name.
    partitions: z
      .unknown()
      .refine(
        (value) =>
          value === undefined ||
          (typeof value === 'number' &&
            Number.isInteger(value) &&
            value >= 1 &&
            value <= MAX_PARTITIONS),
        {
          error: `must be a whole number from 1 to ${MAX_PARTITIONS} (hash partitions of the change log)`,
        },
      )
      .optional(),
    strategy: z
      .unknown()
      .refine((value) => value === undefined || value === 'rebuild', {
        error:
          "must be 'rebuild' (keep the view by rebuilds only) or left out (the config's strategy)",
      })
      .optional(),
  })
  .strict()
  .superRefine(oneTiming)

const view = z.union([
  z.custom((value) => isMaterializedViewClass(value)),
  z.discriminatedUnion('kind', [handwrittenView, declarativeView], {
    error: 'must be a view from defineView(), defineHandwrittenView() or a MaterializedView class',
  }),
])

/** The shape a config file must have; messages name the field. */
export const configSchema = z
  .object({
    database: z
      .union(
        [
          z.string().trim().min(1),
          z.instanceof(Kysely),
          z.custom((v) => isDatabase(v) || isPGlite(v)),
        ],
        {
          error: 'must be a URL (postgres://…, pglite:memory, pglite:PATH) or a Kysely instance',
        },
      )
      .optional(),
    schema: z
      .string({ error: 'must be a string' })
      .trim()
      .min(1, { error: 'must not be empty' })
      .max(50, { error: 'must be at most 50 characters' })
      .optional(),
    batchSize: z
      .number({ error: 'must be a number' })
      .int({ error: 'must be a whole number' })
      .min(1, { error: 'must be at least 1' })
      .max(1_000_000, { error: 'must be at most 1000000' })
      .optional(),
    strategy: z
      .enum(['incremental', 'rebuild', 'auto'], {
        error: 'must be "incremental", "rebuild" or "auto"',
      })
      .optional(),
    rebuildShare: z
      .number({ error: 'must be a number' })
      .gt(0, { error: 'must be more than 0 (a share of the view, e.g. 0.2 for 20%)' })
      .max(1, { error: 'must be at most 1 (a share of the view, e.g. 0.2 for 20%)' })
      .optional(),
    keepRuns: z
      .union([z.string(), z.number()], {
        error: 'must be a duration such as 30d, 12h or 90m',
      })
      .refine((value) => parseDuration(value) !== undefined, {
        error: 'must be a duration such as 30d, 12h or 90m',
      })
      .refine((value) => (parseDuration(value) ?? 0) >= MIN_KEEP_RUNS_MS, {
        error: 'must be at least 1m (a bare number is milliseconds)',
      })
      .optional(),
    views: z
      .union([z.array(view), z.record(z.string(), view)], { error: 'must be a list of views' })
      .optional(),
  })
  .strict()

/** `views.2.name: must not be empty` from zod's issues. */
export function describeIssue(top: z.core.$ZodIssue, input?: unknown): string {
  const { issue, path: fullPath } = innermost(top, [])
  const path = fullPath.map(String).join('.')
  if (issue.code === 'unrecognized_keys') {
    const [kind, known] = knownFields(input, fullPath)
    const [first] = issue.keys
    const guess = issue.keys.length === 1 && first ? closest(first, known) : undefined
    return `unknown field ${issue.keys.map((k) => `"${k}"`).join(', ')}${path ? ` in ${path}` : ''}${guess ? ` (did you mean ${guess}?)` : ''}; known fields${kind}: ${known.join(', ')}`
  }
  if (issue.code === 'invalid_type' && path && valueAt(input, fullPath) === undefined)
    return `${path}: is missing`
  return path ? `${path}: ${issue.message}` : issue.message
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let value: unknown = input
  for (const key of path) value = (value as Record<PropertyKey, unknown> | undefined)?.[key]
  return value
}

/**
 * The issue to report: a misspelt field first (`soruces` also makes `sources` missing, and the
 * misspelling is what to fix), else the first.
 */
export function firstIssue(issues: z.core.$ZodIssue[]): z.core.$ZodIssue {
  return issues.find((i) => innermost(i, []).issue.code === 'unrecognized_keys') ?? issues[0]!
}

/** The fields of the object at `path` in the config: the top level's or a view's. */
function knownFields(input: unknown, path: PropertyKey[]): [string, string[]] {
  if (path.length === 0) return ['', Object.keys(configSchema.shape)]
  const value = valueAt(input, path)
  const kind = (value as { kind?: unknown } | undefined)?.kind
  const schema = kind === 'handwritten' ? handwrittenView : declarativeView
  return [
    ` of a ${kind === 'handwritten' ? 'hand-written' : 'declarative'} view`,
    ['kind', ...Object.keys(schema.shape).filter((k) => k !== 'kind')],
  ]
}

/** The known field a misspelt one most likely meant: a few letters off, case aside. */
function closest(field: string, known: string[]): string | undefined {
  const lower = field.toLowerCase()
  let best: { name: string; distance: number } | undefined
  for (const name of known) {
    const distance = editDistance(lower, name.toLowerCase())
    if (distance <= Math.max(2, Math.floor(name.length / 3)) && (!best || distance < best.distance))
      best = { name, distance }
  }
  return best?.name
}

/** Levenshtein distance, with a swap of two neighbours counted as one edit (`soruces`). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  )
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        best = Math.min(best, d[i - 2]![j - 2]! + 1)
      d[i]![j] = best
    }
  return d[a.length]![b.length]!
}

/**
 * A union (views may be a list or an object; a view one of three kinds) reports only "must be
 * a list of views" for a view whose `key` is wrong. The branch that got furthest into the value
 * names the field that is wrong (`views.0.key`), so that issue is reported; a union whose
 * branches all failed at its own level keeps its own message.
 */
function innermost(
  issue: z.core.$ZodIssue,
  prefix: PropertyKey[],
): { issue: z.core.$ZodIssue; path: PropertyKey[] } {
  const path = [...prefix, ...issue.path]
  let best = { issue, path }
  if (issue.code !== 'invalid_union') return best
  for (const branch of issue.errors) {
    for (const inner of branch) {
      const found = innermost(inner, path)
      const generic = found.issue.code === 'invalid_union' || found.issue.code === 'custom'
      // A misspelt field is what to fix first (it also makes the field it meant missing).
      const misspelt = (i: z.core.$ZodIssue) => i.code === 'unrecognized_keys'
      if (misspelt(best.issue) && !misspelt(found.issue)) continue
      if (
        (misspelt(found.issue) && !misspelt(best.issue)) ||
        (found.path.length > best.path.length &&
          !(generic && found.issue.message === 'Invalid input'))
      )
        best = found
    }
  }
  return best
}
