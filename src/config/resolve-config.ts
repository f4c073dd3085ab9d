import { type DatabaseSpec, DEFAULT_PGLITE_DIR } from '../dialects/connect.js'
import { DEFAULT_REBUILD_SHARE, type Strategy } from '../engine/choose-strategy.js'
import { ConfigError } from '../errors/matview-error.js'
import { fromClass, isMaterializedViewClass } from '../views/handwritten.js'
import type { ViewDefinition } from '../views/view-definition.js'
import { configSchema, describeIssue, firstIssue } from './config-schema.js'
import type { MatviewConfig } from './define-config.js'
import { parseDuration } from './duration.js'

/** The config after the file, env vars, flags and defaults are merged and checked. */
export interface ResolvedConfig {
  database: DatabaseSpec
  /** Where `database` came from, for messages: `--database`, an env var, the file, or the default. */
  databaseFrom: string
  schema: string
  batchSize: number
  /** How declarative views apply pending keys (`update --strategy` overrides). */
  strategy: Strategy
  /** `auto` rebuilds a view when at least this share of its rows is pending. */
  rebuildShare: number
  /** How long run rows are kept, in milliseconds (`keepRuns`). */
  keepRunsMs: number
  views: ViewDefinition[]
  /** The file it came from, if any. */
  configFile?: string
}

/** `keepRuns` when the config does not set it: 30 days. */
export const DEFAULT_KEEP_RUNS_MS = 30 * 24 * 3600 * 1000

/** What overrides the file: flags first, then env vars. */
export interface ConfigOverrides {
  database?: string
  schema?: string
  batchSize?: number
  env?: Record<string, string | undefined>
  configFile?: string
}

/**
 * Checks a config object and applies overrides. The database: `--database` first, then a
 * `database` given in code (a config object with no `configFile`: what the caller wrote wins
 * over the environment), then `MATVIEW_DATABASE_URL`, `DATABASE_URL`, the config file's
 * `database`, the default. Throws a {@link ConfigError} naming the first bad field.
 */
export function resolveConfig(config: unknown, overrides: ConfigOverrides = {}): ResolvedConfig {
  const where = overrides.configFile ? `config ${overrides.configFile}` : 'config'
  const parsed = configSchema.safeParse(config ?? {})
  if (!parsed.success) {
    throw new ConfigError(`${where}: ${describeIssue(firstIssue(parsed.error.issues), config)}`)
  }
  const file = config as MatviewConfig
  const env = overrides.env ?? process.env

  let database: DatabaseSpec = `pglite:${DEFAULT_PGLITE_DIR}`
  let databaseFrom = 'default'
  if (overrides.database) [database, databaseFrom] = [overrides.database, '--database']
  else if (file.database && !overrides.configFile)
    [database, databaseFrom] = [file.database, 'the database option']
  else if (env.MATVIEW_DATABASE_URL)
    [database, databaseFrom] = [env.MATVIEW_DATABASE_URL, 'MATVIEW_DATABASE_URL']
  else if (env.DATABASE_URL) [database, databaseFrom] = [env.DATABASE_URL, 'DATABASE_URL']
  else if (file.database) [database, databaseFrom] = [file.database, where]

  const views = normalizeViews(file.views)
  const seen = new Set<string>()
  for (const view of views) {
    if (seen.has(view.name)) {
      throw new ConfigError(
        `${where}: views: two views are named "${view.name}"; view names must be unique`,
      )
    }
    seen.add(view.name)
  }

  const resolved: ResolvedConfig = {
    database,
    databaseFrom,
    schema: overrides.schema ?? file.schema?.trim() ?? 'matview',
    batchSize: overrides.batchSize ?? file.batchSize ?? 1000,
    strategy: file.strategy ?? 'auto',
    rebuildShare: file.rebuildShare ?? DEFAULT_REBUILD_SHARE,
    keepRunsMs: file.keepRuns === undefined ? DEFAULT_KEEP_RUNS_MS : parseDuration(file.keepRuns)!,
    views,
  }
  if (overrides.configFile) resolved.configFile = overrides.configFile
  return resolved
}

function normalizeViews(views: MatviewConfig['views']): ViewDefinition[] {
  if (!views) return []
  const list = Array.isArray(views) ? views : Object.values(views)
  return list.map((view) =>
    isMaterializedViewClass(view) ? fromClass(view) : (view as ViewDefinition),
  )
}
