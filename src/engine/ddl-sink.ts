import { type Kysely, type RawBuilder, sql } from 'kysely'

/** One statement of the DDL matview runs for a view, with a line that says what it is for. */
export interface DdlStatement {
  comment: string
  sql: RawBuilder<unknown>
}

/**
 * Where the DDL of `create` goes. Creating runs each statement with its values as parameters;
 * `matview sql` (see `print-sql.ts`) also records it, with its values written as literals, to
 * print a script that runs exactly what `create` would. One list of statements serves both.
 */
export interface DdlSink {
  /** A value in a statement: a bind parameter, or a quoted literal when the statement is printed. */
  value(value: unknown): RawBuilder<unknown>
  run(trx: Kysely<any>, statement: DdlStatement): Promise<void>
}

/** Runs the statements: what `create`, `update` and `rebuild` use. */
export const executeDdl: DdlSink = {
  value: (value) => sql`${value}`,
  async run(trx, statement) {
    await statement.sql.execute(trx)
  },
}

/**
 * Runs the statements (so each check after them still sees them, in a transaction the caller
 * rolls back) and keeps their text, values as literals: for printing.
 */
export function recordDdl(): DdlSink & { statements: { comment: string; text: string }[] } {
  const statements: { comment: string; text: string }[] = []
  return {
    statements,
    value: (value) => sql.lit(value),
    async run(trx, statement) {
      const compiled = statement.sql.compile(trx)
      if (compiled.parameters.length > 0)
        throw new Error('internal: a printed statement must not carry bind parameters')
      statements.push({ comment: statement.comment, text: compiled.sql })
      await sql.raw(compiled.sql).execute(trx)
    },
  }
}
