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
  insufficientPrivilege: '42501',
} as const

/**
 * What to do about a permission error while creating a view: the role matview connects as
 * installs triggers on the sources and creates the target (docs/least-privilege.md).
 */
export function privilegeHint(error: PostgresErrorFields): string {
  if (error.code !== SQLSTATE.insufficientPrivilege) return ''
  return "; matview's role must own each source table or hold TRIGGER and SELECT on it, and hold CREATE on the target's schema (docs/least-privilege.md)"
}
