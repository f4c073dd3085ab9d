import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { UsageError } from '../../errors/matview-error.js'
import { configTemplate } from './config-template.js'

/** The entry `init` adds to .gitignore: the embedded database's directory. */
export const GITIGNORE_ENTRY = '.matview/'

export interface InitResult {
  /** The config file written, relative to the project. */
  configFile: string
  /** What happened to .gitignore. */
  gitignore: 'created' | 'added' | 'present'
}

/**
 * Writes a commented config and git-ignores `.matview/`. Checks everything before writing
 * anything, so a refusal leaves the project as it was.
 */
export function initProject(cwd: string, options: { language?: 'ts' | 'mjs' } = {}): InitResult {
  const existing = existingConfig(cwd)
  if (existing !== undefined)
    throw new UsageError(
      `${relative(cwd, existing) || existing} already exists; edit it, or remove it to start over`,
    )
  const language = options.language ?? (isTypeScriptProject(cwd) ? 'ts' : 'mjs')
  const configFile = `matview.config.${language}`
  writeFileSync(join(cwd, configFile), configTemplate(language), { flag: 'wx' })
  return { configFile, gitignore: ignoreMatviewDirectory(cwd) }
}

/** Any file the config loader would pick up. */
function existingConfig(cwd: string): string | undefined {
  for (const dir of ['', '.config'])
    for (const ext of ['ts', 'mts', 'cts', 'js', 'mjs', 'cjs']) {
      const path = join(cwd, dir, `matview.config.${ext}`)
      if (existsSync(path)) return path
    }
  return undefined
}

/** A tsconfig.json, or typescript among the package's dependencies. */
function isTypeScriptProject(cwd: string): boolean {
  if (existsSync(join(cwd, 'tsconfig.json'))) return true
  try {
    const pkg = JSON.parse(readFileSync(join(cwd, 'package.json'), 'utf8')) as Record<
      string,
      Record<string, string> | undefined
    >
    return ['dependencies', 'devDependencies'].some((field) => pkg[field]?.typescript)
  } catch {
    return false
  }
}

function ignoreMatviewDirectory(cwd: string): InitResult['gitignore'] {
  const path = join(cwd, '.gitignore')
  if (!existsSync(path)) {
    writeFileSync(path, `${GITIGNORE_ENTRY}\n`)
    return 'created'
  }
  const text = readFileSync(path, 'utf8')
  const lines = text.split(/\r?\n/).map((line) => line.trim())
  if (lines.some((line) => /^\/?\.matview\/?(\*\*?)?$/.test(line))) return 'present'
  const separator = text === '' || text.endsWith('\n') ? '' : '\n'
  writeFileSync(path, `${text}${separator}${GITIGNORE_ENTRY}\n`)
  return 'added'
}
