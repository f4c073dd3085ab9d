// The results of a run: the table on the terminal and bench/RESULTS.md.
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { markdownTable, ms, ratio, statementLabel, textTable } from './format.mjs'

const HEADER = ['Measurement', 'matview', 'baseline', 'ratio', 'target', 'met']

export class Results {
  rows = []
  notes = []
  diagnostics = []
  breakdowns = []
  failed = false

  /** One line of the table; `ratio` is a number, `ratioText` overrides how it prints. */
  add(row) {
    this.rows.push(row)
  }

  note(text) {
    this.notes.push(text)
  }

  diagnostic(title, text) {
    this.diagnostics.push({ title, text })
  }

  /** matview's statements of one call, grouped by text, most total time first. */
  breakdown(title, groups) {
    const total = groups.reduce((sum, g) => sum + g.ms, 0)
    const calls = groups.reduce((sum, g) => sum + g.calls, 0)
    this.breakdowns.push({
      title: `${title}: ${calls} statements, ${ms(total)} in the database driver`,
      rows: groups
        .slice(0, 8)
        .map((g) => [statementLabel(g.label), g.calls, ms(g.ms), ms(g.ms / g.calls)]),
    })
  }

  cells() {
    return this.rows.map((r) => [
      r.name,
      r.matview,
      r.baseline,
      r.ratioText ?? (r.ratio === undefined ? '' : ratio(r.ratio)),
      r.target?.text ?? '',
      r.target?.met === undefined ? '' : r.target.met ? 'met' : 'NOT MET',
    ])
  }

  targets() {
    const judged = this.rows.filter((r) => r.target && r.target.met !== undefined)
    return { met: judged.filter((r) => r.target.met).length, total: judged.length }
  }

  text() {
    const { met, total } = this.targets()
    return [
      textTable(HEADER, this.cells()),
      '',
      `Targets met: ${met} of ${total}.`,
      ...this.notes,
    ].join('\n')
  }
}

/** Cores, memory, versions and load: what the numbers were measured on. */
export async function machineInfo(env) {
  const cpus = os.cpus()
  const info = {
    cores: cpus.length,
    cpu: cpus[0]?.model?.trim() ?? 'unknown',
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    load: os.loadavg(),
  }
  if (env.dialect === 'postgres') {
    const { rows } = await env.exec(
      `SELECT current_setting('server_version') AS version,
              current_setting('shared_buffers') AS shared_buffers,
              current_setting('synchronous_commit') AS synchronous_commit,
              current_setting('max_wal_size') AS max_wal_size`,
    )
    info.database = `PostgreSQL ${rows[0].version} (shared_buffers ${rows[0].shared_buffers}, synchronous_commit ${rows[0].synchronous_commit}, max_wal_size ${rows[0].max_wal_size})`
  } else {
    const { rows } = await env.exec(`SELECT current_setting('server_version') AS version`)
    const pkg = JSON.parse(
      await readFile(
        new URL('../../node_modules/@electric-sql/pglite/package.json', import.meta.url),
        'utf8',
      ),
    )
    info.database = `PGlite ${pkg.version} (PostgreSQL ${rows[0].version}, in-memory, in this process)`
  }
  return info
}

const load = (l) => l.map((x) => x.toFixed(2)).join(' / ')

/** The section of RESULTS.md for this run (dialect and size). */
export function section(run) {
  const { results, machine, plan, size } = run
  const { met, total } = results.targets()
  const lines = [
    `## ${run.title}`,
    '',
    `- Command: \`${run.command}\``,
    `- Date: ${run.started.toISOString()}; the run took ${duration(run.elapsedMs)}`,
    `- Machine: ${machine.cores} cores (${machine.cpu}), ${machine.memory} RAM, ${machine.os}; load average (1/5/15 min) ${load(machine.load)} at the start, ${load(run.loadAtEnd)} at the end`,
    `- ${machine.database}; Node ${machine.node}`,
    `- Workload: ${size.customers.toLocaleString('en-US')} customers, ${size.orders.toLocaleString('en-US')} orders; view customer_totals (key customer_id); batchSize ${plan.batchSize.toLocaleString('en-US')}`,
    `- Repetitions (medians): ${plan.describe}`,
    '',
    markdownTable(HEADER, results.cells()),
    '',
    `Targets met: ${met} of ${total}.`,
    '',
    'Ratios: apply and drain, REFRESH time / matview time; capture, time with the view / time without (for pgbench runs, tps without / tps with), except the TPC-B line, which is tps with / tps without; backfill, matview time / CREATE TABLE AS time.',
    '',
    ...results.notes.map((n) => `- ${n}`),
  ]
  if (results.breakdowns.length + results.diagnostics.length > 0) {
    lines.push('', '<details><summary>Diagnostics: matview statements and plans</summary>', '')
    for (const b of results.breakdowns) {
      lines.push(
        `#### ${b.title}`,
        '',
        markdownTable(['statement', 'calls', 'total', 'mean'], b.rows),
        '',
      )
    }
    for (const d of results.diagnostics) {
      lines.push(`#### ${d.title}`, '', '```text', d.text, '```', '')
    }
    lines.push('</details>')
  }
  return lines.join('\n')
}

function duration(msValue) {
  const s = Math.round(msValue / 1000)
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`
}

const ORDER = [
  'postgres-full',
  'postgres-small',
  'postgres-tiny',
  'pglite-full',
  'pglite-small',
  'pglite-tiny',
]

const INTRO = `# matview benchmark results

Written by \`npm run bench\` (bench/run.mjs; \`npm run bench -- --help\` for the options). Each
run replaces the section of its dialect and size and keeps the others and the findings below.
Absolute times on a shared 2-core machine are noise; the ratios, measured side by side in one
run, are the result.
`

const FINDINGS_PLACEHOLDER = `## Findings

(Written by hand after looking at a run: what bounds the targets that are not met.)`

/** Replaces this run's section in `file`, keeping the other sections and the findings. */
export async function writeResults(file, key, body) {
  const old = existsSync(file) ? await readFile(file, 'utf8') : ''
  const sections = new Map()
  for (const match of old.matchAll(/<!-- section:(\S+) -->\n([\s\S]*?)\n<!-- \/section:\1 -->/g)) {
    sections.set(match[1], match[2])
  }
  sections.set(key, body)
  const findings =
    /<!-- findings -->\n([\s\S]*?)\n<!-- \/findings -->/.exec(old)?.[1] ?? FINDINGS_PLACEHOLDER
  const keys = [...sections.keys()].sort((a, b) => rank(a) - rank(b))
  const text = [
    INTRO,
    ...keys.map((k) => `<!-- section:${k} -->\n${sections.get(k)}\n<!-- /section:${k} -->\n`),
    `<!-- findings -->\n${findings}\n<!-- /findings -->\n`,
  ].join('\n')
  await writeFile(file, text)
}

function rank(key) {
  const i = ORDER.indexOf(key)
  return i === -1 ? ORDER.length : i
}
