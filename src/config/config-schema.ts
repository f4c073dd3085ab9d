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
export function describeIssue(top: z.core.$ZodIssue): string {
  const { issue, path: fullPath } = innermost(top, [])
  const path = fullPath.map(String).join('.')
  if (issue.code === 'unrecognized_keys') {
    return `unknown field ${issue.keys.map((k) => `"${k}"`).join(', ')}${path ? ` in ${path}` : ''}; known fields: database, schema, batchSize, strategy, rebuildShare, keepRuns, views`
  }
  return path ? `${path}: ${issue.message}` : issue.message
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
      if (
        found.path.length > best.path.length &&
        !(generic && found.issue.message === 'Invalid input')
      )
        best = found
    }
  }
  return best
}
