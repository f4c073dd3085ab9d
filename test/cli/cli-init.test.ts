import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config/load-config.js'
import { runCli } from '../support/cli.js'

// CLI processes and a tsc run: generous on a loaded machine.
const TIMEOUT = 120_000

/** A new project where `import … from 'matview'` resolves to this package, as after npm install. */
function project(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'matview-init-'))
  mkdirSync(join(dir, 'node_modules'))
  symlinkSync(resolve('.'), join(dir, 'node_modules', 'matview'), 'dir')
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

describe('matview init', () => {
  it(
    'writes a .mjs config in a JavaScript project that loads and validates, and ignores .matview/',
    async () => {
      const dir = project({ 'package.json': '{ "name": "app", "version": "1.0.0" }\n' })
      const result = await runCli(['init'], dir)
      expect(result.stderr).toBe('')
      expect(result.code).toBe(0)
      expect(result.stdout).toContain('wrote matview.config.mjs; created .gitignore with .matview/')
      expect(result.stdout).toMatch(/npx matview update/)
      expect(result.stdout).toMatch(/npx matview status/)
      expect(readFileSync(join(dir, '.gitignore'), 'utf8')).toBe('.matview/\n')
      const config = await loadConfig({ cwd: dir, env: {} })
      expect(config.configFile).toBe(join(dir, 'matview.config.mjs'))
      expect(config.database).toBe('pglite:.matview/pglite')
      expect(config.views).toEqual([])
      // The CLI reads it too.
      const list = await runCli(['list', '--json'], dir)
      expect(list.code).toBe(0)
      expect(JSON.parse(list.stdout)).toEqual([])
    },
    TIMEOUT,
  )

  it(
    'writes a .ts config in a TypeScript project that loads, validates and type-checks',
    async () => {
      const dir = project({
        'package.json': '{ "name": "app", "version": "1.0.0", "type": "module" }\n',
        'tsconfig.json': JSON.stringify({
          compilerOptions: {
            module: 'nodenext',
            moduleResolution: 'nodenext',
            target: 'es2022',
            strict: true,
            noEmit: true,
            skipLibCheck: true,
            types: [],
          },
          include: ['matview.config.ts'],
        }),
        '.gitignore': 'node_modules',
      })
      const result = await runCli(['init'], dir)
      expect(result.code).toBe(0)
      expect(result.stdout).toContain('wrote matview.config.ts; added .matview/ to .gitignore')
      expect(readFileSync(join(dir, '.gitignore'), 'utf8')).toBe('node_modules\n.matview/\n')
      const text = readFileSync(join(dir, 'matview.config.ts'), 'utf8')
      expect(text).toMatch(/^\/\/ /) // commented
      const config = await loadConfig({ cwd: dir, env: {} })
      expect(config.configFile).toBe(join(dir, 'matview.config.ts'))
      expect(config.views).toEqual([])
      // The file compiles in the user's project as written (the repo's own TypeScript).
      execFileSync(process.execPath, [resolve('node_modules/typescript/bin/tsc'), '-p', dir], {
        stdio: 'pipe',
      })
    },
    TIMEOUT,
  )

  it(
    'picks TypeScript from a typescript dependency, and --js overrides it',
    async () => {
      const pkg = '{ "name": "app", "devDependencies": { "typescript": "^5.0.0" } }\n'
      const typed = project({ 'package.json': pkg })
      expect((await runCli(['init'], typed)).stdout).toContain('wrote matview.config.ts')
      const plain = project({ 'package.json': pkg })
      expect((await runCli(['init', '--js'], plain)).stdout).toContain('wrote matview.config.mjs')
    },
    TIMEOUT,
  )

  it(
    'does not repeat .matview/ in a .gitignore that has it',
    async () => {
      const dir = project({ '.gitignore': 'dist/\n/.matview\n' })
      const result = await runCli(['init'], dir)
      expect(result.code).toBe(0)
      expect(result.stdout).toContain('.gitignore already ignores .matview/')
      expect(readFileSync(join(dir, '.gitignore'), 'utf8')).toBe('dist/\n/.matview\n')
    },
    TIMEOUT,
  )

  it(
    'refuses to overwrite a config, in one line, changing nothing',
    async () => {
      const dir = project({ 'matview.config.ts': 'export default {}\n' })
      const result = await runCli(['init', '--js'], dir)
      expect(result.code).toBe(2)
      expect(result.stdout).toBe('')
      expect(result.stderr.trim()).toBe(
        'matview: matview.config.ts already exists; edit it, or remove it to start over',
      )
      expect(readFileSync(join(dir, 'matview.config.ts'), 'utf8')).toBe('export default {}\n')
      expect(() => readFileSync(join(dir, 'matview.config.mjs'))).toThrow()
      expect(() => readFileSync(join(dir, '.gitignore'))).toThrow()
      const nested = project()
      mkdirSync(join(nested, '.config'))
      writeFileSync(join(nested, '.config', 'matview.config.mjs'), 'export default {}\n')
      const again = await runCli(['init'], nested)
      expect(again.code).toBe(2)
      expect(again.stderr.trim()).toMatch(/\.config\/matview\.config\.mjs already exists/)
    },
    TIMEOUT,
  )
})
