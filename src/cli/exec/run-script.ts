import { type Kysely, type QueryResult, sql } from 'kysely'
import { errorMessage, StatementError } from '../../errors/matview-error.js'
import { formatTable } from '../output/table.js'
import type { ScriptStatement } from './split-statements.js'

/** Statements that return rows, for "(0 rows)" when they return none. */
const QUERY = /^(select|with|values|table|show|explain|fetch)\b/i
const CHANGE = /\b(insert|update|delete|merge)\b/i

/**
 * Runs the statements one by one on one connection (so BEGIN … COMMIT in the script holds),
 * printing each one's rows or a one-line tag as it finishes. `singleTransaction` wraps the
 * whole script in one transaction, rolled back on the first error. The SQL is the user's own
 * script, run as it is written, as psql would.
 */
export async function runScript(
  db: Kysely<any>,
  statements: ScriptStatement[],
  options: { singleTransaction?: boolean; write: (text: string) => void },
): Promise<void> {
  await db.connection().execute(async (conn) => {
    if (options.singleTransaction) await sql`BEGIN`.execute(conn)
    // The statement that opened the script's own transaction, rolled back if one fails in it.
    let begun: number | undefined
    for (const [index, statement] of statements.entries()) {
      let result: QueryResult<Record<string, unknown>>
      try {
        result = await sql.raw<Record<string, unknown>>(statement.text).execute(conn)
      } catch (error) {
        const open = options.singleTransaction || begun !== undefined
        if (open) await sql`ROLLBACK`.execute(conn).catch(() => {})
        const before = options.singleTransaction
          ? '; nothing was applied (--single-transaction)'
          : begun !== undefined
            ? `; the transaction begun by statement ${begun + 1} is rolled back${begun > 0 ? `, the ${begun} before it stay applied` : ''}`
            : index > 0
              ? `; the ${index} before it stay applied`
              : ''
        throw new StatementError(
          `statement ${index + 1} of ${statements.length} (line ${statement.line}) failed: ${oneLine(errorMessage(error))}${before}`,
          { cause: error },
        )
      }
      const verb = stripLeadingComments(statement.text).split(/\s/, 1)[0]!.toLowerCase()
      if (verb === 'begin' || verb === 'start') begun ??= index
      else if (['commit', 'end', 'rollback', 'abort'].includes(verb)) begun = undefined
      options.write(describeResult(statement.text, result))
    }
    if (options.singleTransaction) await sql`COMMIT`.execute(conn)
  })
}

/** Rows as a table with their count, or a tag such as `INSERT 3` or `CREATE TABLE`. */
export function describeResult(text: string, result: QueryResult<Record<string, unknown>>): string {
  const body = stripLeadingComments(text)
  if (result.rows.length > 0) {
    const header = Object.keys(result.rows[0]!)
    const rows = result.rows.map((row) => header.map((column) => formatValue(row[column])))
    const count = `(${result.rows.length} ${result.rows.length === 1 ? 'row' : 'rows'})`
    return `${formatTable(header, rows)}\n${count}\n`
  }
  const change =
    /^(insert|update|delete|merge)\b/i.exec(body) ??
    (/^with\b/i.test(body) ? CHANGE.exec(body) : null)
  if (change) return `${change[1]!.toUpperCase()} ${result.numAffectedRows ?? 0n}\n`
  if (QUERY.test(body)) return '(0 rows)\n'
  return `${tagOf(body)}\n`
}

/** `CREATE TABLE`, `DROP INDEX`, `BEGIN`: the statement's verb and, for DDL, what it acts on. */
function tagOf(body: string): string {
  const words = body.split(/\s+/, 8).map((w) => w.toUpperCase().replace(/[^A-Z_]/g, ''))
  const verb = words[0] ?? ''
  if (!['CREATE', 'ALTER', 'DROP', 'COMMENT'].includes(verb)) return verb
  const skip = new Set([
    'OR',
    'REPLACE',
    'TEMP',
    'TEMPORARY',
    'UNLOGGED',
    'UNIQUE',
    'GLOBAL',
    'LOCAL',
    'ON',
  ])
  const object = words.slice(1).filter((w) => !skip.has(w))
  const kind = object[0] === 'MATERIALIZED' ? `${object[0]} ${object[1] ?? ''}` : (object[0] ?? '')
  return `${verb} ${kind}`.trim()
}

function stripLeadingComments(text: string): string {
  let rest = text.trimStart()
  for (;;) {
    if (rest.startsWith('--')) rest = rest.slice(rest.indexOf('\n') + 1 || rest.length).trimStart()
    else if (rest.startsWith('/*'))
      rest = rest.slice(rest.indexOf('*/') + 2 || rest.length).trimStart()
    else return rest
  }
}

/** A value as psql shows it: NULL empty, bytes in hex, JSON for structures. */
function formatValue(value: unknown): string {
  if (value === null || value === undefined) return ''
  if (value instanceof Date) return value.toISOString()
  if (value instanceof Uint8Array) return `\\x${Buffer.from(value).toString('hex')}`
  if (typeof value === 'object')
    return JSON.stringify(value, (_key, v) => (typeof v === 'bigint' ? v.toString() : v))
  return String(value)
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim()
}
