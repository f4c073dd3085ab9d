/** The parts of a PostgreSQL error both drivers (pg, PGlite) expose. */
export interface PostgresErrorFields {
  code?: string
  message: string
  detail?: string
  column?: string
}

export function postgresError(error: unknown): PostgresErrorFields | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const e = error as Record<string, unknown>
  if (typeof e.code !== 'string' || !/^[0-9A-Z]{5}$/.test(e.code)) return undefined
  return {
    code: e.code,
    message: String(e.message ?? ''),
    detail: typeof e.detail === 'string' ? e.detail : undefined,
    column: typeof e.column === 'string' ? e.column : undefined,
  }
}

/** SQLSTATE codes matview reacts to. */
export const SQLSTATE = {
  uniqueViolation: '23505',
  notNullViolation: '23502',
  cardinalityViolation: '21000',
  duplicateTable: '42P07',
  undefinedTable: '42P01',
  undefinedColumn: '42703',
} as const
