import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { loadConfig as loadWithC12 } from 'c12'
import { ConfigError, errorMessage } from '../errors/matview-error.js'
import { type ConfigOverrides, type ResolvedConfig, resolveConfig } from './resolve-config.js'

export interface LoadConfigOptions extends Omit<ConfigOverrides, 'configFile'> {
  /** Where to look for `matview.config.*` (and `.config/matview.*`). */
  cwd?: string
  /** An explicit config file (`--config PATH`); it must exist. */
  configPath?: string
}

/**
 * Finds and loads the config file with c12 (TypeScript through jiti, no build step), then
 * resolves it. No file is fine: every field has a default or comes from env vars and flags.
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<ResolvedConfig> {
  const cwd = resolve(options.cwd ?? process.cwd())
  let configFile: string | undefined
  let config: unknown = {}
  if (options.configPath !== undefined) {
    const path = resolve(cwd, options.configPath)
    if (!existsSync(path)) {
      throw new ConfigError(`config file ${options.configPath} does not exist`, {
        code: 'CONFIG_NOT_FOUND',
      })
    }
    configFile = path
  }
  try {
    const loaded = await loadWithC12({
      name: 'matview',
      cwd,
      ...(configFile ? { configFile } : {}),
      rcFile: false,
      globalRc: false,
      packageJson: false,
      dotenv: false,
      envName: false,
      omit$Keys: true,
    })
    config = loaded.config
    if (loaded.configFile && existsSync(loaded.configFile)) configFile = loaded.configFile
  } catch (error) {
    // A syntax error's message carries the place on a line of its own: keep it, on one line.
    const [problem, ...rest] = errorMessage(error)
      .split('\n')
      .map((line) => line.trim())
      .filter(Boolean)
    const place = rest.find((line) => /:\d+:\d+$/.test(line))
    const file =
      configFile ?? place?.replace(/:\d+:\d+$/, '') ?? findConfigFile(cwd) ?? 'matview.config.*'
    throw new ConfigError(
      `config ${file} could not be loaded: ${problem ?? 'unknown error'}${place ? ` at ${place}` : ''}; fix the file`,
      { cause: error },
    )
  }
  if (configFile && !hasDefaultExport(readFileSync(configFile, 'utf8')))
    throw new ConfigError(
      `config ${configFile} has no default export; end it with \`export default defineConfig({ views: [ … ] })\``,
    )
  return resolveConfig(config, { ...options, ...(configFile ? { configFile } : {}) })
}

/**
 * Whether a config file's text exports a default: without one c12 hands back `{}` (or the
 * named exports), which would read as an empty config or a misspelt field.
 */
function hasDefaultExport(text: string): boolean {
  return /\bexport\s+default\b|\bas\s+default\b|\bmodule\.exports\b|\bexports\.default\b/.test(text)
}

/** The file c12 would have loaded, to name it when loading failed before c12 could say. */
function findConfigFile(cwd: string): string | undefined {
  for (const dir of ['', '.config'])
    for (const ext of ['ts', 'mts', 'cts', 'js', 'mjs', 'cjs']) {
      const path = resolve(cwd, dir, `matview.config.${ext}`)
      if (existsSync(path)) return path
    }
  return undefined
}
