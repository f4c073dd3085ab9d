import { loadConfig } from '../config/load-config.js'
import { Matview } from '../matview.js'
import { selectViews } from '../runner/update.js'
import type { GlobalOptions } from './options.js'

/** Loads the config the flags point at and opens matview on it. */
export async function openMatview(
  options: GlobalOptions & { batchSize?: number },
  views?: string[],
): Promise<Matview> {
  const config = await loadConfig({
    ...(options.config !== undefined ? { configPath: options.config } : {}),
    ...(options.database !== undefined ? { database: options.database } : {}),
    ...(options.schema !== undefined ? { schema: options.schema } : {}),
    ...(options.batchSize !== undefined ? { batchSize: options.batchSize } : {}),
  })
  // Unknown view names are refused before the database is opened (or an embedded one created).
  if (views && views.length > 0) selectViews(config.views, views)
  const mv = await Matview.open(config)
  // Which database, and why that one: a stray DATABASE_URL would otherwise go unnoticed.
  if (options.verbose)
    process.stderr.write(
      `debug database: ${mv.database.description} (from ${config.databaseFrom})\n`,
    )
  return mv
}

/** Runs `fn` with an open matview and always closes it. */
export async function withMatview<T>(
  options: GlobalOptions,
  fn: (mv: Matview) => Promise<T>,
  views?: string[],
): Promise<T> {
  const mv = await openMatview(options, views)
  try {
    return await fn(mv)
  } finally {
    await mv.close()
  }
}
