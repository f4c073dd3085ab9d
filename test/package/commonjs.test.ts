import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'

// The package as users get it: packed (what `files` ships), installed into a new CommonJS
// project with npm (from its cache when it can), then required and compiled there. About 10-30 s.
const TSC = resolve('node_modules/typescript/bin/tsc')
const NODE_MAJOR_MINOR = process.versions.node.split('.').map(Number) as [number, number]
/** Node ≥ 20.19 and ≥ 22.12 require() ES modules without a flag. */
const requireEsm =
  NODE_MAJOR_MINOR[0] > 22 ||
  (NODE_MAJOR_MINOR[0] === 22 && NODE_MAJOR_MINOR[1] >= 12) ||
  (NODE_MAJOR_MINOR[0] === 20 && NODE_MAJOR_MINOR[1] >= 19)

let app: string
/** Each test runs node or tsc once or twice: generous on a loaded machine. */
const TIMEOUT = 180_000

function tsconfig(module: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    compilerOptions: {
      module,
      target: 'es2022',
      strict: true,
      outDir: 'out',
      types: [],
      ...extra,
    },
    files: ['index.ts'],
  })
}

function tsc(dir: string): { code: number; output: string } {
  const result = spawnSync(process.execPath, [TSC, '-p', dir], { encoding: 'utf8' })
  return { code: result.status ?? 1, output: `${result.stdout}${result.stderr}` }
}

/** A TypeScript CommonJS project of its own beside the installed one (shares its node_modules). */
function consumer(name: string, tsconfigText: string, source: string): string {
  const dir = join(app, name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'tsconfig.json'), tsconfigText)
  writeFileSync(join(dir, 'index.ts'), source)
  return dir
}

const USE_IT = `
export async function main(): Promise<string> {
  const config: MatviewConfig = { database: 'pglite:memory', views: [] }
  const mv = await createMatview(config)
  try {
    const statuses = await mv.status()
    return \`views: \${statuses.length}\`
  } finally {
    await mv.close()
  }
}
main().then((line) => console.log(line))
`

describe.skipIf(!requireEsm)('the packed package in a CommonJS project', () => {
  beforeAll(() => {
    const packs = mkdtempSync(join(tmpdir(), 'matview-pack-'))
    // --ignore-scripts: `prepare` would rebuild dist/ under the other tests' feet.
    execFileSync('npm', ['pack', '--ignore-scripts', '--pack-destination', packs], {
      stdio: 'pipe',
    })
    const tarball = join(packs, readdirSync(packs).find((f) => f.endsWith('.tgz'))!)
    app = mkdtempSync(join(tmpdir(), 'matview-cjs-'))
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({ name: 'cjs-app', version: '1.0.0', private: true, type: 'commonjs' }),
    )
    execFileSync(
      'npm',
      ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball],
      { cwd: app, stdio: 'pipe' },
    )
  }, 240_000)

  it(
    'require("matview") gives the API, and it opens a database',
    () => {
      const script = `
      const { createMatview, defineView, sql, MatviewError } = require('matview')
      if (typeof defineView !== 'function' || typeof sql !== 'function' || typeof MatviewError !== 'function')
        throw new Error('missing exports')
      createMatview({ database: 'pglite:memory', views: [] })
        .then(async (mv) => { console.log('views: ' + (await mv.status()).length); await mv.close() })`
      const result = spawnSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8' })
      expect(result.stderr).not.toMatch(/Error/)
      expect(result.status).toBe(0)
      expect(result.stdout.trim()).toBe('views: 0')
    },
    TIMEOUT,
  )

  it(
    'a CommonJS TypeScript project (module nodenext) imports it typed, compiles and runs',
    () => {
      const dir = consumer(
        'nodenext',
        tsconfig('nodenext'),
        `import { createMatview, type MatviewConfig } from 'matview'\n${USE_IT}`,
      )
      expect(tsc(dir)).toEqual({ code: 0, output: '' })
      const result = spawnSync(process.execPath, [join(dir, 'out', 'index.js')], {
        cwd: app,
        encoding: 'utf8',
      })
      expect(result.status).toBe(0)
      expect(result.stdout.trim()).toBe('views: 0')
    },
    TIMEOUT,
  )

  it(
    'types are checked: a wrong use fails to compile',
    () => {
      const dir = consumer(
        'wrong',
        tsconfig('nodenext'),
        `import { createMatview } from 'matview'\nexport const n: number = createMatview\n`,
      )
      const { code, output } = tsc(dir)
      expect(code).not.toBe(0)
      expect(output).toMatch(/TS2322/)
    },
    TIMEOUT,
  )

  it(
    'module node16 refuses the import (TS1479), and the documented await import() compiles',
    () => {
      const refused = consumer(
        'node16',
        tsconfig('node16'),
        `import { createMatview } from 'matview'\nvoid createMatview\n`,
      )
      expect(tsc(refused).output).toMatch(/TS1479/)
      const fixed = consumer(
        'node16-fixed',
        tsconfig('node16'),
        `import type { MatviewConfig } from 'matview' with { 'resolution-mode': 'import' }
export async function main(): Promise<string> {
  const { createMatview } = await import('matview')
  const config: MatviewConfig = { database: 'pglite:memory', views: [] }
  const mv = await createMatview(config)
  try {
    return \`views: \${(await mv.status()).length}\`
  } finally {
    await mv.close()
  }
}
main().then((line) => console.log(line))
`,
      )
      expect(tsc(fixed)).toEqual({ code: 0, output: '' })
      const result = spawnSync(process.execPath, [join(fixed, 'out', 'index.js')], {
        cwd: app,
        encoding: 'utf8',
      })
      expect(result.status).toBe(0)
      expect(result.stdout.trim()).toBe('views: 0')
    },
    TIMEOUT,
  )
})
