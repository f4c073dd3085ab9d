import type { RawBuilder } from 'kysely'
import type { ViewTiming } from './view-timing.js'

/**
 * How a changed row of a source names the view keys it affects: either a column map
 * (`{ viewKeyColumn: 'sourceColumn' }`, the changed row holds the key) or a SQL query over the
 * changed rows, available as the relation `changed`, that returns the view's key columns.
 */
export type SourceMapping = Readonly<Record<string, string>> | RawBuilder<unknown>

export interface DeclarativeViewInput extends ViewTiming {
  /** The target table's name; `schema.table` is allowed. */
  name: string
  /** The columns that identify one row of the target (its primary key). */
  key: string[]
  /** The query whose result the target holds, written with Kysely's `sql` tag. */
  query: RawBuilder<unknown>
  /** Every table the query reads, with how a changed row maps to view keys. */
  sources: Readonly<Record<string, SourceMapping>>
  /** Extra indexes on the target, each a list of columns. */
  indexes?: string[][]
  /**
   * Splits the change log into this many hash partitions of the key (1 to 64), each applied
   * under its own lock, so several runners (worker or update processes) apply one large view
   * in parallel. @defaultValue 1
   */
  partitions?: number
  /**
   * `'rebuild'`: keep the view by rebuilds only (a shadow table filled from the query and swapped
   * in) whenever something is pending, never by recomputing keys. For queries whose rows for one
   * key depend on other keys' rows (top N with `LIMIT`, `rank() OVER (ORDER BY …)`), which are
   * refused without it. It overrides the config's and the command line's strategy.
   */
  strategy?: 'rebuild'
}

/** A declarative view: matview captures changes on its sources and keeps the target equal to the query. */
export interface DeclarativeView extends DeclarativeViewInput {
  readonly kind: 'declarative'
}

/**
 * Defines a declarative view: a SQL query and a key, kept up to date incrementally.
 *
 * @example
 * export const customerTotals = defineView({
 *   name: 'customer_totals',
 *   key: ['customer_id'],
 *   query: sql`SELECT customer_id, count(*) AS order_count FROM orders GROUP BY customer_id`,
 *   sources: { orders: { customer_id: 'customer_id' } },
 * })
 */
export function defineView(view: DeclarativeViewInput): DeclarativeView {
  return { ...view, kind: 'declarative' }
}
