import type { DatabaseSpec } from '../dialects/connect.js'
import type { Strategy } from '../engine/choose-strategy.js'
import type { MaterializedViewClass } from '../views/handwritten.js'
import type { ViewDefinition } from '../views/view-definition.js'

/** What `matview.config.ts` exports. Every field is optional. */
export interface MatviewConfig {
  /**
   * The database: `postgres://user@host:port/db`, `pglite:memory`, `pglite:PATH`, or a Kysely
   * or PGlite instance the application already has (matview never closes those). `MATVIEW_DATABASE_URL`, then `DATABASE_URL`, override
   * it, and `--database` overrides both.
   * @defaultValue `pglite:.matview/pglite` (an embedded database in the working directory)
   */
  database?: DatabaseSpec
  /**
   * The schema that holds matview's catalog (views, run history, change logs).
   * @defaultValue `matview`
   */
  schema?: string
  /**
   * The most rows (hand-written views) or keys (declarative views) one batch handles.
   * @defaultValue 1000
   */
  batchSize?: number
  /**
   * How `update` applies a declarative view's pending keys: `incremental` (batch by batch),
   * `rebuild` (a rebuild with swap), or `auto`: a rebuild when at least `rebuildShare` of the
   * view's rows is pending, else batches. `update --strategy` overrides it.
   * @defaultValue `auto`
   */
  strategy?: Strategy
  /**
   * The share of a view's rows (0 to 1) that must be pending for `auto` to rebuild.
   * @defaultValue 0.15
   */
  rebuildShare?: number
  /**
   * How long run history is kept: `update` and `rebuild` delete a view's older runs as they
   * finish (at most 1,000 per run). A duration such as `'30d'`, `'12h'`, or milliseconds.
   * @defaultValue `'30d'`
   */
  keepRuns?: string | number
  /** The views: definitions from `defineView`/`defineHandwrittenView`, or `MaterializedView` classes. */
  views?:
    | ReadonlyArray<ViewDefinition | MaterializedViewClass>
    | Readonly<Record<string, ViewDefinition | MaterializedViewClass>>
}

/**
 * Types a config file; returns its argument unchanged.
 *
 * @example
 * // matview.config.ts
 * export default defineConfig({ database: process.env.DATABASE_URL, views: [customerTotals] })
 */
export function defineConfig(config: MatviewConfig): MatviewConfig {
  return config
}
