// Numbers as the report prints them.

export function ms(value) {
  if (!Number.isFinite(value)) return 'n/a'
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`
  if (value >= 10) return `${value.toFixed(1)} ms`
  return `${value.toFixed(2)} ms`
}

export function tps(value) {
  return Number.isFinite(value) ? `${Math.round(value).toLocaleString('en-US')} tps` : 'n/a'
}

export function count(value) {
  return Number(value).toLocaleString('en-US')
}

export function ratio(value) {
  if (!Number.isFinite(value)) return 'n/a'
  if (value >= 100) return `${value.toFixed(0)}×`
  if (value >= 10) return `${value.toFixed(1)}×`
  return `${value.toFixed(2)}×`
}

/** A statement's text cut to one line for a breakdown table. */
export function statementLabel(text, width = 90) {
  const line = text.replace(/\s+/g, ' ').trim()
  return line.length > width ? `${line.slice(0, width - 1)}…` : line
}

/** A plain-text table with a header rule; columns padded to their widest cell. */
export function textTable(header, rows) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) =>
    cells
      .map((c, i) => String(c).padEnd(widths[i]))
      .join('  ')
      .trimEnd()
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

export function markdownTable(header, rows) {
  const escapeCell = (cell) => String(cell).replace(/\|/g, '\\|')
  return [
    `| ${header.map(escapeCell).join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(escapeCell).join(' | ')} |`),
  ].join('\n')
}
