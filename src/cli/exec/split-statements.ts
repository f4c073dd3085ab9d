/** One statement of a script, with the line it starts on (for error messages). */
export interface ScriptStatement {
  text: string
  line: number
}

/**
 * Splits a SQL script at the semicolons PostgreSQL would split it at: not inside quotes
 * ('…', E'…', "…"), dollar quotes ($$…$$, $tag$…$tag$) or comments (-- to the end of the line, and nested block comments).
 * Each statement runs as a query of its own, so its rows or count can be printed (and so a
 * Kysely connection, which takes one statement per query, can run it).
 */
export function splitStatements(script: string): ScriptStatement[] {
  const statements: ScriptStatement[] = []
  let start = 0
  let line = 1
  let startLine = 1
  let i = 0
  const push = (end: number) => {
    const raw = script.slice(start, end)
    const text = raw.trim()
    if (text !== '' && !isOnlyComments(text)) {
      const leading = raw.slice(0, raw.length - raw.trimStart().length)
      statements.push({ text, line: startLine + count(leading, '\n') })
    }
  }
  while (i < script.length) {
    const c = script[i]!
    const next = script[i + 1]
    if (c === '\n') {
      line++
      i++
    } else if (c === '-' && next === '-') {
      const end = script.indexOf('\n', i)
      i = end === -1 ? script.length : end
    } else if (c === '/' && next === '*') {
      let depth = 1
      i += 2
      while (i < script.length && depth > 0) {
        if (script[i] === '/' && script[i + 1] === '*') {
          depth++
          i += 2
        } else if (script[i] === '*' && script[i + 1] === '/') {
          depth--
          i += 2
        } else {
          if (script[i] === '\n') line++
          i++
        }
      }
    } else if (c === "'" || c === '"') {
      // E'…' strings take backslash escapes; standard strings double the quote.
      const escapes =
        c === "'" && /[eE]/.test(script[i - 1] ?? '') && !/\w/.test(script[i - 2] ?? '')
      i++
      while (i < script.length) {
        const d = script[i]!
        if (d === '\n') line++
        if (escapes && d === '\\') i += 2
        else if (d === c && script[i + 1] === c) i += 2
        else if (d === c) {
          i++
          break
        } else i++
      }
    } else if (c === '$' && !/[\w$]/.test(script[i - 1] ?? '')) {
      const tag = /^\$([A-Za-z_][A-Za-z_0-9]*)?\$/.exec(script.slice(i))
      if (!tag) {
        i++
        continue
      }
      const end = script.indexOf(tag[0], i + tag[0].length)
      const stop = end === -1 ? script.length : end + tag[0].length
      line += count(script.slice(i, stop), '\n')
      i = stop
    } else if (c === ';') {
      push(i)
      i++
      start = i
      startLine = line
    } else i++
  }
  push(script.length)
  return statements
}

function count(text: string, char: string): number {
  let n = 0
  for (const c of text) if (c === char) n++
  return n
}

/** Whether a piece holds nothing but comments (a script's trailing comment). */
function isOnlyComments(text: string): boolean {
  return (
    text
      .replace(/--[^\n]*/g, '')
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .trim() === ''
  )
}
