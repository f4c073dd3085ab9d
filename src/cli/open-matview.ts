import { loadConfig } from '../config/load-config.js'
import { Matview } from '../matview.js'
import type { GlobalOptions } from './options.js'

/** Loads the config the flags point at and opens matview on it. */
export async function openMatview(
  options: GlobalOptions & { batchSize?: number },
): Promise<Matview> {
  const config = await loadConfig({
    ...(options.config !== undefined ? { configPath: options.config } : {}),
    ...(options.database !== undefined ? { database: options.database } : {}),
    ...(options.schema !== undefined ? { schema: options.schema } : {}),
    ...(options.batchSize !== undefined ? { batchSize: options.batchSize } : {}),
  })
  return Matview.open(config)
}

/** Runs `fn` with an open matview and always closes it. */
export async function withMatview<T>(
  options: GlobalOptions,
  fn: (mv: Matview) => Promise<T>,
): Promise<T> {
  const mv = await openMatview(options)
  try {
    return await fn(mv)
  } finally {
    await mv.close()
  }
}
