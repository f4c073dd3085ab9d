/**
 * What the cross-key analysis needs to know about a function it meets by name: whether it
 * aggregates rows, depends on something no write logs (the clock, a random draw, a sequence:
 * VOLATILE, or a stable function of the time), or returns a set. The catalog says it for any
 * function (create looks the query's function names up in pg_proc); the built-in answers below
 * serve the analysis without a database, and fill in what the catalog does not mark (now() is
 * STABLE, yet follows the clock).
 */
export interface FunctionKind {
  aggregate?: boolean
  /** VOLATILE, or follows the clock: the rows change with no write to log. */
  volatile?: boolean
  setReturning?: boolean
}

/** The kind of a function by its (unqualified, lower-case) name; undefined: an ordinary one. */
export type FunctionKinds = (name: string) => FunctionKind | undefined

const AGGREGATES = [
  'count',
  'sum',
  'avg',
  'min',
  'max',
  'array_agg',
  'string_agg',
  'json_agg',
  'jsonb_agg',
  'json_object_agg',
  'jsonb_object_agg',
  'bool_and',
  'bool_or',
  'every',
  'bit_and',
  'bit_or',
  'bit_xor',
  'xmlagg',
  'range_agg',
  'range_intersect_agg',
  'any_value',
  'percentile_cont',
  'percentile_disc',
  'mode',
  'stddev',
  'stddev_pop',
  'stddev_samp',
  'variance',
  'var_pop',
  'var_samp',
  'corr',
  'covar_pop',
  'covar_samp',
  'regr_avgx',
  'regr_avgy',
  'regr_count',
  'regr_intercept',
  'regr_r2',
  'regr_slope',
  'regr_sxx',
  'regr_sxy',
  'regr_syy',
]

/** Volatile, or stable but reading the clock. */
const VOLATILE = [
  'now',
  'transaction_timestamp',
  'statement_timestamp',
  'clock_timestamp',
  'timeofday',
  'random',
  'random_normal',
  'setseed',
  'nextval',
  'currval',
  'lastval',
  'setval',
  'gen_random_uuid',
  'uuidv4',
  'uuidv7',
  'txid_current',
  'pg_current_xact_id',
]

const SET_RETURNING = [
  'generate_series',
  'generate_subscripts',
  'unnest',
  'regexp_matches',
  'regexp_split_to_table',
  'string_to_table',
  'json_array_elements',
  'json_array_elements_text',
  'jsonb_array_elements',
  'jsonb_array_elements_text',
  'json_each',
  'json_each_text',
  'jsonb_each',
  'jsonb_each_text',
  'json_object_keys',
  'jsonb_object_keys',
  'jsonb_path_query',
  'json_to_recordset',
  'jsonb_to_recordset',
  'json_populate_recordset',
  'jsonb_populate_recordset',
]

const BUILTIN = new Map<string, FunctionKind>([
  ...AGGREGATES.map((name): [string, FunctionKind] => [name, { aggregate: true }]),
  ...VOLATILE.map((name): [string, FunctionKind] => [name, { volatile: true }]),
  ...SET_RETURNING.map((name): [string, FunctionKind] => [name, { setReturning: true }]),
])

/** The built-in answers only: for the analysis without a database. */
export const builtinFunctionKinds: FunctionKinds = (name) => BUILTIN.get(name)

/**
 * The catalog's answers (pg_proc, by name: any overload that aggregates, is volatile or returns
 * a set counts, as the analysis does not resolve argument types), joined with the built-in ones.
 */
export function functionKindsFrom(catalog: ReadonlyMap<string, FunctionKind>): FunctionKinds {
  return (name) => {
    const found = catalog.get(name)
    const builtin = BUILTIN.get(name)
    if (!found) return builtin
    return {
      aggregate: found.aggregate === true || builtin?.aggregate === true,
      volatile: found.volatile === true || builtin?.volatile === true,
      setReturning: found.setReturning === true || builtin?.setReturning === true,
    }
  }
}

/** The (unqualified, lower-case) names of every function the parse tree calls. */
export function functionNamesIn(node: unknown): string[] {
  const names = new Set<string>()
  const visit = (n: unknown): void => {
    if (Array.isArray(n)) {
      for (const item of n) visit(item)
      return
    }
    if (typeof n !== 'object' || n === null) return
    const call = (n as { FuncCall?: { funcname?: { String?: { sval?: string } }[] } }).FuncCall
    const name = call?.funcname?.at(-1)?.String?.sval
    if (name) names.add(name.toLowerCase())
    for (const value of Object.values(n)) visit(value)
  }
  visit(node)
  return [...names].sort()
}
