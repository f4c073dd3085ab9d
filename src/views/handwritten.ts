import type { ViewContext } from './view-context.js'
import type { ViewTiming } from './view-timing.js'

/** A count or a number of rows handled; hooks may be sync or async. */
type Hook = (ctx: ViewContext) => number | Promise<number>

/** The six hooks of a hand-written view; leave out the ones the view does not need. */
export interface HandwrittenHooks {
  /** How many rows need inserting now. */
  needsInsert?: Hook
  /** How many rows need updating now. */
  needsUpdate?: Hook
  /** How many rows need deleting now. */
  needsDelete?: Hook
  /** Inserts at most `ctx.batchSize` rows in `ctx.db` (the batch's transaction); returns how many. */
  doInsert?: Hook
  /** Updates at most `ctx.batchSize` rows; returns how many. */
  doUpdate?: Hook
  /** Deletes at most `ctx.batchSize` rows; returns how many. */
  doDelete?: Hook
}

export interface HandwrittenViewInput extends HandwrittenHooks, ViewTiming {
  /** The view's name: what `--views` and `status` call it. */
  name: string
  /** Views that must be updated before this one (by name). */
  dependsOn?: string[]
}

/** A hand-written view: matview runs its hooks, the view decides what changed and writes it. */
export interface HandwrittenView extends HandwrittenViewInput {
  readonly kind: 'handwritten'
}

/** The operations of a hand-written view, in the order the runner applies them. */
export const OPERATIONS = [
  { kind: 'insert', needs: 'needsInsert', apply: 'doInsert' },
  { kind: 'update', needs: 'needsUpdate', apply: 'doUpdate' },
  { kind: 'delete', needs: 'needsDelete', apply: 'doDelete' },
] as const

export type Operation = (typeof OPERATIONS)[number]['kind']

/**
 * Defines a hand-written view (the model of the Django package matview grew from).
 *
 * @example
 * export const tagCounts = defineHandwrittenView({
 *   name: 'tag_counts',
 *   async needsInsert({ db, sql }) { … return count },
 *   async doInsert({ db, sql, batchSize }) { … return rowsInserted },
 * })
 */
export function defineHandwrittenView(view: HandwrittenViewInput): HandwrittenView {
  return { ...view, kind: 'handwritten' }
}

/**
 * The class form, for people coming from the Django package: override the static hooks.
 * The view's name is `static viewName`, or the class name in snake_case.
 *
 * @example
 * class TagCounts extends MaterializedView {
 *   static async needsInsert(ctx: ViewContext) { … }
 *   static async doInsert(ctx: ViewContext) { … }
 * }
 */
// biome-ignore lint/complexity/noStaticOnlyClass: the Django-style form is a class of static hooks by design
export abstract class MaterializedView {
  static viewName?: string
  static dependsOn?: string[]
  static schedule?: ViewTiming['schedule']
  static every?: ViewTiming['every']
  static onChange?: ViewTiming['onChange']
  static maxLag?: ViewTiming['maxLag']
}

export type MaterializedViewClass = typeof MaterializedView & HandwrittenHooks

export function isMaterializedViewClass(value: unknown): value is MaterializedViewClass {
  return typeof value === 'function' && value.prototype instanceof MaterializedView
}

/** Turns a `MaterializedView` subclass into the same definition `defineHandwrittenView` makes. */
export function fromClass(cls: MaterializedViewClass): HandwrittenView {
  const hooks: HandwrittenHooks = {}
  for (const name of [
    'needsInsert',
    'needsUpdate',
    'needsDelete',
    'doInsert',
    'doUpdate',
    'doDelete',
  ] as const) {
    const hook = cls[name]
    if (typeof hook === 'function') hooks[name] = hook.bind(cls)
  }
  return defineHandwrittenView({
    name: cls.viewName ?? snakeCase(cls.name),
    ...(cls.dependsOn ? { dependsOn: cls.dependsOn } : {}),
    ...(cls.schedule !== undefined ? { schedule: cls.schedule } : {}),
    ...(cls.every !== undefined ? { every: cls.every } : {}),
    ...(cls.onChange !== undefined ? { onChange: cls.onChange } : {}),
    ...(cls.maxLag !== undefined ? { maxLag: cls.maxLag } : {}),
    ...hooks,
  })
}

function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase()
}
