import { builtinFunctionKinds, type FunctionKinds } from './function-kinds.js'
import type { Node } from './parse-query.js'

/**
 * A construct that makes one key's rows depend on other keys' rows (or on the clock): a write
 * logs only the keys it touches, so recomputing those keys leaves the others wrong.
 */
export interface CrossKeyFinding {
  /** The construct as the user wrote it: `LIMIT`, `rank() OVER (…)`, `DISTINCT ON`, … */
  construct: string
  /** Byte offset into the query's text, when the parser gave one. */
  location: number | undefined
  /** Why it is not key-local, in a few words. */
  why: string
  /** What to write instead, when something key-local does the same; else only the rebuild. */
  instead?: string
}

/**
 * How a query level (a SELECT of the query, a subquery, a CTE) relates to the view's key:
 * - `keyed`: its rows carry the key; `classes[i]` holds the expressions equal to key column i
 *   (the output's, and those the level's equality conditions join to it).
 * - `fixed`: a subquery correlated on the key: all its rows belong to one key, whatever it does
 *   with them (LIMIT, aggregates, windows) stays within that key.
 * - `unkeyed`: anything else: whatever it computes over several rows mixes keys.
 */
interface Level {
  mode: 'keyed' | 'fixed' | 'unkeyed'
  /** Key output names (keyed levels: GROUP BY, DISTINCT ON may name the output). */
  names: string[]
  classes: Node[][]
  /** The tables its FROM names, by alias: a unique key of one may fix several key columns. */
  tables?: Map<string, TableName>
}

/** A table as the query names it. */
export interface TableName {
  schema?: string
  name: string
}

/** The column sets a table's unique indexes (its primary key first) hold; [] when unknown. */
export type UniqueKeys = (table: TableName) => string[][]

/** What the catalog knows, for the analysis; without it, built-in function kinds and no keys. */
export interface QueryFacts {
  functions?: FunctionKinds
  uniqueKeys?: UniqueKeys
}

interface Context {
  text: string
  functions: FunctionKinds
  uniqueKeys: UniqueKeys
  findings: CrossKeyFinding[]
  /** CTEs in scope by name; `seen` once visited as a FROM item, `visiting` while it is. */
  ctes: Map<string, Cte>
  /** The levels enclosing the one being visited, innermost last: a subquery may correlate on any. */
  stack: Level[]
}

interface Cte {
  query: Node
  seen: boolean
  visiting: boolean
}

/**
 * Every construct of the query that makes one key's rows depend on other keys' rows, from its
 * raw parse tree (`parseQuery`) and the view's key columns: LIMIT/OFFSET/FETCH, a window not
 * partitioned by the key, DISTINCT ON without the key, an aggregate not grouped by the key or in
 * a subquery not correlated on it, a set-returning function over a subquery, a volatile or
 * clock-reading function, and what cannot be classified safely (WITH RECURSIVE, grouping sets,
 * TABLESAMPLE). Empty: the query is key-local. A pure function: no database.
 */
export function findCrossKey(
  parsed: { text: string; select: Node },
  key: string[],
  facts: QueryFacts = {},
): CrossKeyFinding[] {
  const ctx: Context = {
    text: parsed.text,
    functions: facts.functions ?? builtinFunctionKinds,
    uniqueKeys: facts.uniqueKeys ?? (() => []),
    findings: [],
    ctes: new Map(),
    stack: [],
  }
  visitSelect(parsed.select, { kind: 'names', names: key }, ctx)
  return ctx.findings
}

type KeyRef = { kind: 'names'; names: string[] } | { kind: 'positions'; positions: number[] }

/** Visits a level; returns its mode (a FROM item of the enclosing level made of it). */
function visitSelect(select: Node, ref: KeyRef | Level | null, ctx: Context): Level['mode'] {
  const outer = new Map(ctx.ctes)
  visitWith(select, ctx)
  if (select.op && select.op !== 'SETOP_NONE') {
    const level = ref && 'mode' in ref ? ref : undefined
    checkLimit(select, level?.mode === 'fixed', ctx)
    // Branches line up by position; names come from the first branch.
    let branchRef: KeyRef | Level | null = level ?? null
    if (ref && !('mode' in ref)) {
      const positions =
        ref.kind === 'positions' ? ref.positions : ref.names.map((n) => outputPosition(select, n))
      branchRef = positions.every((p) => p >= 0) ? { kind: 'positions', positions } : null
    }
    const left = visitSelect(select.larg, branchRef, ctx)
    const right = visitSelect(select.rarg, branchRef, ctx)
    finishWith(ctx, outer)
    return left === right ? left : 'unkeyed'
  }
  if (select.valuesLists) {
    for (const row of select.valuesLists) walkExpr(row, levelOf(null), ctx)
    finishWith(ctx, outer)
    return 'unkeyed'
  }
  let level = ref && 'mode' in ref ? withEqualities(ref, select) : resolveLevel(select, ref)
  level.tables = tablesIn(select.fromClause ?? [])
  ctx.stack.push(level)
  const from: Node[] = select.fromClause ?? []
  // Rows made only of subqueries correlated on the key all belong to that one key.
  if (visitFrom(from, level, ctx) && from.length > 0 && level.mode === 'unkeyed') {
    level = { mode: 'fixed', names: [], classes: [], tables: level.tables }
    ctx.stack[ctx.stack.length - 1] = level
  }
  checkLimit(select, level.mode === 'fixed', ctx)
  checkDistinctOn(select, level, ctx)
  checkGrouping(select, level, ctx)
  for (const part of [
    select.targetList,
    select.whereClause,
    select.havingClause,
    select.groupClause,
    select.sortClause,
    select.distinctClause,
    select.windowClause,
  ]) {
    if (part) walkExpr(part, level, ctx, select)
  }
  for (const target of select.targetList ?? []) checkSetReturning(target.ResTarget?.val, ctx)
  ctx.stack.pop()
  finishWith(ctx, outer)
  return level.mode
}

// ---------------------------------------------------------------------------------------------
// Levels and the key's expressions

function levelOf(classes: Node[][] | null, mode?: Level['mode'], names: string[] = []): Level {
  if (!classes) return { mode: 'unkeyed', names: [], classes: [] }
  return { mode: mode ?? 'keyed', names, classes }
}

/** The key's expressions at a level entered with output names or positions. */
function resolveLevel(select: Node, ref: KeyRef | null): Level {
  if (!ref) return levelOf(null)
  const targets: Node[] = (select.targetList ?? []).map((t: Node) => t.ResTarget)
  const names: string[] = []
  const classes: Node[][] = []
  const count = ref.kind === 'names' ? ref.names.length : ref.positions.length
  for (let i = 0; i < count; i++) {
    let expr: Node | undefined
    let name: string | undefined
    if (ref.kind === 'names') {
      name = ref.names[i]!
      expr = targets.find((t) => outputName(t) === name)?.val
      // `SELECT *` / `t.*`: the key is a column of what the star expands to.
      if (!expr) {
        const star = targets.find((t) => isStar(t.val))
        if (star) {
          const qualifier = star.val.ColumnRef.fields.slice(0, -1)
          expr = { ColumnRef: { fields: [...qualifier, { String: { sval: name } }] } }
        }
      }
    } else {
      const target = targets[ref.positions[i]!]
      if (target && !isStar(target.val)) {
        expr = target.val
        name = outputName(target)
      }
    }
    if (!expr) return levelOf(null)
    names.push(name ?? '')
    classes.push([expr])
  }
  return withEqualities(levelOf(classes, 'keyed', names), select)
}

/** Adds to each key class the expressions the level's `a = b` conditions join to it. */
function withEqualities(level: Level, select: Node): Level {
  if (level.mode === 'unkeyed') return level
  const pairs: [Node, Node][] = []
  const collect = (cond: Node | undefined) => {
    for (const c of conjuncts(cond)) {
      const eq = equality(c)
      if (eq) pairs.push(eq)
    }
  }
  collect(select.whereClause)
  const joins = (item: Node) => {
    const join = item.JoinExpr
    if (!join) return
    collect(join.quals)
    joins(join.larg)
    joins(join.rarg)
  }
  for (const item of select.fromClause ?? []) joins(item)
  const classes = level.classes.map((cls) => {
    const out = [...cls]
    for (let grew = true; grew; ) {
      grew = false
      for (const [a, b] of pairs) {
        const hasA = out.some((e) => sameExpr(e, a))
        const hasB = out.some((e) => sameExpr(e, b))
        if (hasA !== hasB) {
          out.push(hasA ? b : a)
          grew = true
        }
      }
    }
    return out
  })
  return { ...level, classes }
}

/** Whether `expr` is key column `i` at this level (by expression, output name or position). */
function isKey(expr: Node, i: number, level: Level, select?: Node): boolean {
  if (level.classes[i]!.some((e) => sameExpr(e, expr))) return true
  const name = level.names[i]
  const fields = expr.ColumnRef?.fields
  if (name && fields?.length === 1 && fields[0]?.String?.sval === name) return true
  const position = expr.A_Const?.ival?.ival
  if (select && typeof position === 'number') {
    const target = select.targetList?.[position - 1]?.ResTarget
    if (target && level.classes[i]!.some((e) => sameExpr(e, target.val))) return true
  }
  return false
}

/** Every key column is among `exprs`. */
function coversKey(exprs: Node[], level: Level, select?: Node): boolean {
  return level.classes.every((_, i) => exprs.some((e) => isKey(e, i, level, select)))
}

// ---------------------------------------------------------------------------------------------
// FROM items, CTEs, subqueries

function visitWith(select: Node, ctx: Context): void {
  const withClause = select.withClause?.WithClause ?? select.withClause
  if (!withClause?.ctes) return
  if (withClause.recursive) {
    ctx.findings.push({
      construct: 'WITH RECURSIVE',
      location: withClause.location,
      why: 'matview cannot tell which keys a recursive query ties together',
    })
  }
  for (const cte of withClause.ctes) {
    const c = cte.CommonTableExpr
    ctx.ctes.set(c.ctename, { query: c.ctequery, seen: false, visiting: false })
  }
}

/** CTEs no FROM item read are still part of the query: visited as unkeyed. */
function finishWith(ctx: Context, outer: Map<string, Cte>): void {
  for (const [name, cte] of ctx.ctes) {
    if (outer.get(name) === cte || cte.seen) continue
    cte.seen = true
    cte.visiting = true
    visitStatement(cte.query, null, ctx)
    cte.visiting = false
  }
  ctx.ctes = outer
}

function visitStatement(stmt: Node, ref: KeyRef | Level | null, ctx: Context): Level['mode'] {
  if (stmt?.SelectStmt) return visitSelect(stmt.SelectStmt, ref, ctx)
  ctx.findings.push({
    construct: Object.keys(stmt ?? {})[0] ?? 'a statement',
    location: undefined,
    why: 'matview maintains a query of SELECTs only',
  })
  return 'unkeyed'
}

/** Visits FROM items; returns whether every one is a subquery correlated on the key. */
function visitFrom(items: Node[], level: Level, ctx: Context): boolean {
  let allFixed = true
  for (const item of items) {
    if (item.JoinExpr) {
      allFixed = visitFrom([item.JoinExpr.larg, item.JoinExpr.rarg], level, ctx) && allFixed
      if (item.JoinExpr.quals) walkExpr(item.JoinExpr.quals, level, ctx)
      continue
    }
    let mode: Level['mode'] = 'unkeyed'
    if (item.RangeVar) {
      const rv = item.RangeVar
      const cte = rv.schemaname ? undefined : ctx.ctes.get(rv.relname)
      // A recursive CTE reads itself: visited once (and refused as WITH RECURSIVE).
      if (cte && !cte.visiting) {
        cte.seen = true
        cte.visiting = true
        mode = visitStatement(
          cte.query,
          propagate(level, rv.alias?.aliasname ?? rv.relname, items.length === 1),
          ctx,
        )
        cte.visiting = false
      }
    } else if (item.RangeSubselect) {
      const sub = item.RangeSubselect
      const alias = sub.alias?.aliasname
      const inner = sub.subquery?.SelectStmt
      const fixed = inner ? correlatedLevel(inner, ctx) : undefined
      mode = fixed
        ? visitSelect(inner, fixed, ctx)
        : visitStatement(
            sub.subquery,
            alias ? propagate(level, alias, items.length === 1) : null,
            ctx,
          )
    } else if (item.RangeFunction) {
      walkExpr(item.RangeFunction.functions, levelOf(null), ctx)
    } else if (item.RangeTableSample) {
      ctx.findings.push({
        construct: 'TABLESAMPLE',
        location: item.RangeTableSample.location,
        why: 'a sample is a random draw of rows',
      })
      visitFrom([item.RangeTableSample.relation], level, ctx)
    } else {
      ctx.findings.push({
        construct: Object.keys(item)[0] ?? 'a FROM item',
        location: undefined,
        why: 'matview cannot classify this FROM item',
      })
    }
    if (mode !== 'fixed') allFixed = false
  }
  return allFixed
}

/**
 * The key, as output names of the FROM item `alias`, when every key column is one of them:
 * `alias.col` in the key's class, or a bare `col` when the item is the only one in FROM.
 */
function propagate(level: Level, alias: string, only: boolean): KeyRef | null {
  if (level.mode !== 'keyed') return null
  const names: string[] = []
  for (const cls of level.classes) {
    const fields = cls
      .map((e) => e.ColumnRef?.fields as Node[] | undefined)
      .find(
        (f) =>
          (f?.length === 2 && f[0]?.String?.sval === alias && f[1]?.String) ||
          (only && f?.length === 1 && f[0]?.String),
      )
    if (!fields) return null
    names.push(fields.at(-1)!.String.sval)
  }
  return { kind: 'names', names }
}

/**
 * A subquery correlated on the key: its WHERE has `inner = outer` for every key column, where
 * `outer` is the key at an enclosing level (innermost first), qualified by a name the subquery
 * does not define. Then all its rows belong to the one key the outer row has: a fixed level.
 */
function correlatedLevel(inner: Node, ctx: Context): Level | undefined {
  for (let i = ctx.stack.length - 1; i >= 0; i--) {
    const level = correlatedWith(inner, ctx.stack[i]!, ctx.uniqueKeys)
    if (level) return level
  }
  return undefined
}

/**
 * Correlated on every key column, or on some that a unique key of their table holds, when the
 * other key columns come from that same table row (customer id fixes the customer's region).
 */
function correlatedWith(inner: Node, outer: Level, uniqueKeys: UniqueKeys): Level | undefined {
  if (outer.classes.length === 0 || (inner.op && inner.op !== 'SETOP_NONE')) return undefined
  const own = fromNames(inner.fromClause ?? [])
  const isOuterKey = (e: Node, i: number) => {
    const fields = e.ColumnRef?.fields as Node[] | undefined
    if (!fields || fields.length < 2 || own.has(fields[0]?.String?.sval)) return false
    return outer.classes[i]!.some((k) => sameExpr(k, e))
  }
  const classes: Node[][] = []
  // Outer columns the correlation fixes, by table alias.
  const fixedColumns = new Map<string, Set<string>>()
  for (let i = 0; i < outer.classes.length; i++) {
    let innerSide: Node | undefined
    for (const c of conjuncts(inner.whereClause)) {
      const eq = equality(c)
      if (!eq) continue
      const [outerSide, other] = isOuterKey(eq[1], i) ? [eq[1], eq[0]] : [eq[0], eq[1]]
      if (!isOuterKey(outerSide, i) || isOuterRef(other, own)) continue
      innerSide = other
      const [alias, column] = (outerSide.ColumnRef.fields as Node[]).map((f) => f.String?.sval)
      if (alias && column)
        fixedColumns.set(alias, (fixedColumns.get(alias) ?? new Set()).add(column))
      break
    }
    classes.push(innerSide ? [innerSide] : [])
  }
  if (fixedColumns.size === 0) return undefined
  for (let i = 0; i < classes.length; i++) {
    if (classes[i]!.length > 0) continue
    const determined = outer.classes[i]!.some((e) => {
      const fields = e.ColumnRef?.fields as Node[] | undefined
      const alias = fields?.length === 2 ? fields[0]?.String?.sval : undefined
      const fixed = alias ? fixedColumns.get(alias) : undefined
      const table = alias ? outer.tables?.get(alias) : undefined
      return (
        fixed !== undefined &&
        table !== undefined &&
        uniqueKeys(table).some((unique) => unique.length > 0 && unique.every((c) => fixed.has(c)))
      )
    })
    if (!determined) return undefined
  }
  return withEqualities(levelOf(classes, 'fixed'), inner)
}

/** The tables a FROM list names directly, by alias (or name). */
function tablesIn(items: Node[]): Map<string, TableName> {
  const tables = new Map<string, TableName>()
  const add = (item: Node | undefined) => {
    if (!item) return
    if (item.JoinExpr) {
      add(item.JoinExpr.larg)
      add(item.JoinExpr.rarg)
    }
    const rv = item.RangeVar
    if (rv)
      tables.set(rv.alias?.aliasname ?? rv.relname, {
        ...(rv.schemaname ? { schema: rv.schemaname } : {}),
        name: rv.relname,
      })
  }
  for (const item of items) add(item)
  return tables
}

function isOuterRef(e: Node, own: Set<string>): boolean {
  const fields = e.ColumnRef?.fields as Node[] | undefined
  return !fields || fields.length < 2 || !own.has(fields[0]?.String?.sval)
}

/** The names a FROM list defines (aliases, or table names). */
function fromNames(items: Node[]): Set<string> {
  const names = new Set<string>()
  const add = (item: Node) => {
    if (!item) return
    if (item.JoinExpr) {
      add(item.JoinExpr.larg)
      add(item.JoinExpr.rarg)
      if (item.JoinExpr.alias) names.add(item.JoinExpr.alias.aliasname)
    }
    const named = item.RangeVar ?? item.RangeSubselect ?? item.RangeFunction
    if (named?.alias?.aliasname) names.add(named.alias.aliasname)
    else if (item.RangeVar) names.add(item.RangeVar.relname)
    if (item.RangeTableSample) add(item.RangeTableSample.relation)
  }
  for (const item of items) add(item)
  return names
}

// ---------------------------------------------------------------------------------------------
// The constructs

function checkLimit(select: Node, fixed: boolean, ctx: Context): void {
  const count = select.limitCount
  const hasCount = count && !count.A_Const?.isnull
  if (fixed || (!hasCount && !select.limitOffset)) return
  const node = hasCount ? count : select.limitOffset
  const location = firstLocation(node)
  const word = keywordBefore(ctx.text, location) ?? (hasCount ? 'LIMIT' : 'OFFSET')
  ctx.findings.push({
    construct: word,
    location,
    why: `${word} picks rows by their place among every key's rows`,
    instead: 'a top N per key: put the limit in a subquery correlated on the key',
  })
}

function checkDistinctOn(select: Node, level: Level, ctx: Context): void {
  const on: Node[] = (select.distinctClause ?? []).filter((e: Node) => Object.keys(e).length > 0)
  if (on.length === 0 || level.mode === 'fixed') return
  if (level.mode === 'keyed' && coversKey(on, level, select)) return
  ctx.findings.push({
    construct: 'DISTINCT ON',
    location: firstLocation(on[0]!),
    why: 'DISTINCT ON over columns other than the key keeps one row among several keys',
    instead: 'put every key column in DISTINCT ON',
  })
}

function checkGrouping(select: Node, level: Level, ctx: Context): void {
  if (level.mode === 'fixed') return
  const groups: Node[] = select.groupClause ?? []
  const sets = groups.find((g) => g.GroupingSet)
  if (sets) {
    ctx.findings.push({
      construct: 'GROUPING SETS / ROLLUP / CUBE',
      location: sets.GroupingSet.location,
      why: 'grouping sets add rows that sum over several keys',
    })
    return
  }
  const aggregate = findAggregate(
    [select.targetList, select.havingClause, select.sortClause],
    ctx.functions,
  )
  if (groups.length === 0 && !aggregate && !select.havingClause) return
  if (level.mode === 'keyed' && groups.length > 0 && coversKey(groups, level, select)) return
  const where = aggregate ?? groups[0] ?? select.havingClause
  ctx.findings.push({
    construct: aggregate ? `${functionName(aggregate)}()` : 'GROUP BY',
    location: firstLocation(where),
    why:
      level.mode === 'keyed'
        ? 'it aggregates rows of several keys (the GROUP BY does not hold every key column)'
        : 'an aggregate in a subquery that is not correlated on the key sums up rows of every key',
    instead:
      level.mode === 'keyed'
        ? 'group by every key column'
        : 'correlate the subquery on the key (WHERE inner.key = outer.key)',
  })
}

function checkWindow(call: Node, level: Level, ctx: Context, select?: Node): void {
  if (level.mode === 'fixed') return
  let def = call.over
  // `OVER w` names a window of the WINDOW clause, which may build on another.
  const named = (name: string | undefined) =>
    (select?.windowClause ?? []).map((w: Node) => w.WindowDef).find((w: Node) => w.name === name)
  let partition: Node[] = def.partitionClause ?? []
  for (
    let depth = 0;
    partition.length === 0 && (def?.name || def?.refname) && depth < 10;
    depth++
  ) {
    def = named(def.refname ?? def.name)
    partition = def?.partitionClause ?? []
  }
  if (level.mode === 'keyed' && coversKey(partition, level)) return
  ctx.findings.push({
    construct: `${functionName(call)}() OVER (…)`,
    location: call.location,
    why:
      partition.length === 0
        ? 'a window without PARTITION BY spans every key'
        : 'a window not partitioned by the key spans several keys',
    instead: 'PARTITION BY every key column',
  })
}

/** A set-returning function over a subquery in the select list: its rows follow other rows. */
function checkSetReturning(expr: Node | undefined, ctx: Context): void {
  if (!expr) return
  const found = findNode(expr, (n) => {
    const call = n.FuncCall
    return (
      call !== undefined &&
      ctx.functions(functionName(n))?.setReturning === true &&
      findNode(call.args ?? [], (a) => a.SubLink !== undefined, false) !== undefined
    )
  })
  if (found)
    ctx.findings.push({
      construct: `${functionName(found)}() over a subquery`,
      location: found.FuncCall.location,
      why: 'the rows it returns for a key follow rows of other keys',
    })
}

/** Walks an expression: functions (volatile, windows) and subqueries (levels of their own). */
function walkExpr(node: Node | Node[], level: Level, ctx: Context, select?: Node): void {
  forEachNode(node, (n) => {
    if (n.SubLink) {
      const sub = n.SubLink.subselect?.SelectStmt
      if (n.SubLink.testexpr) walkExpr(n.SubLink.testexpr, level, ctx, select)
      if (sub) visitSelect(sub, correlatedLevel(sub, ctx) ?? null, ctx)
      else visitStatement(n.SubLink.subselect, null, ctx)
      return false
    }
    if (n.FuncCall) {
      const name = functionName(n)
      if (ctx.functions(name)?.volatile) {
        ctx.findings.push({
          construct: `${name}()`,
          location: n.FuncCall.location,
          why: `${name}() changes with no write to log (it is VOLATILE or follows the clock)`,
          instead:
            'compare with a column the sources hold, or declare the function IMMUTABLE or STABLE if it is',
        })
      }
      if (n.FuncCall.over) checkWindow(n.FuncCall, level, ctx, select)
    }
    if (n.SQLValueFunction && CLOCK_VALUES.has(n.SQLValueFunction.op)) {
      const word = n.SQLValueFunction.op.replace('SVFOP_', '').replace(/_N$/, '')
      ctx.findings.push({
        construct: word,
        location: n.SQLValueFunction.location,
        why: `${word} follows the clock, and no write logs the time passing`,
        instead: 'compare with a column the sources hold',
      })
    }
    return true
  })
}

/** Calls `visit` on every node, depth first; `visit` returns false to skip the node's children. */
function forEachNode(node: unknown, visit: (n: Node) => boolean): void {
  if (Array.isArray(node)) {
    for (const item of node) forEachNode(item, visit)
    return
  }
  if (typeof node !== 'object' || node === null) return
  if (!visit(node as Node)) return
  for (const value of Object.values(node as Node)) forEachNode(value, visit)
}

const CLOCK_VALUES = new Set([
  'SVFOP_CURRENT_DATE',
  'SVFOP_CURRENT_TIME',
  'SVFOP_CURRENT_TIME_N',
  'SVFOP_CURRENT_TIMESTAMP',
  'SVFOP_CURRENT_TIMESTAMP_N',
  'SVFOP_LOCALTIME',
  'SVFOP_LOCALTIME_N',
  'SVFOP_LOCALTIMESTAMP',
  'SVFOP_LOCALTIMESTAMP_N',
])

/** The first aggregate call of these parts of a level (not inside subqueries or windows). */
function findAggregate(parts: (Node | undefined)[], functions: FunctionKinds): Node | undefined {
  for (const part of parts) {
    if (!part) continue
    const found = findNode(part, (n) => {
      const call = n.FuncCall
      if (!call || call.over) return false
      return (
        call.agg_star === true ||
        call.agg_distinct === true ||
        call.agg_within_group === true ||
        call.agg_order !== undefined ||
        call.agg_filter !== undefined ||
        functions(functionName(n))?.aggregate === true
      )
    })
    if (found) return found
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Tree helpers

/**
 * The first node (depth first) for which `match` is true. Subqueries are not entered unless
 * `intoSubqueries`; a match's own children are not searched.
 */
function findNode(
  node: unknown,
  match: (n: Node) => boolean,
  intoSubqueries = false,
): Node | undefined {
  if (Array.isArray(node)) {
    for (const item of node) {
      const found = findNode(item, match, intoSubqueries)
      if (found) return found
    }
    return undefined
  }
  if (typeof node !== 'object' || node === null) return undefined
  const n = node as Node
  if (match(n)) return n
  if (!intoSubqueries && (n.SubLink || n.SelectStmt || n.RangeSubselect)) return undefined
  for (const value of Object.values(n)) {
    const found = findNode(value, match, intoSubqueries)
    if (found) return found
  }
  return undefined
}

function conjuncts(cond: Node | undefined): Node[] {
  if (!cond) return []
  if (cond.BoolExpr?.boolop === 'AND_EXPR') return cond.BoolExpr.args.flatMap(conjuncts)
  return [cond]
}

function equality(cond: Node): [Node, Node] | undefined {
  const e = cond.A_Expr
  if (e?.kind !== 'AEXPR_OP' || e.name?.length !== 1 || e.name[0].String?.sval !== '=')
    return undefined
  return [e.lexpr, e.rexpr]
}

/** Same expression, locations aside; a bare column name matches a qualified one of that name. */
function sameExpr(a: Node, b: Node): boolean {
  const fa = a.ColumnRef?.fields as Node[] | undefined
  const fb = b.ColumnRef?.fields as Node[] | undefined
  if (fa && fb && (fa.length === 1 || fb.length === 1))
    return (
      fa.at(-1)?.String?.sval !== undefined && fa.at(-1)?.String?.sval === fb.at(-1)?.String?.sval
    )
  return canonical(a) === canonical(b)
}

function canonical(node: Node): string {
  return JSON.stringify(node, (k, v) => (k === 'location' ? undefined : v))
}

function outputName(target: Node): string | undefined {
  if (target.name) return target.name
  const fields = target.val?.ColumnRef?.fields as Node[] | undefined
  return fields?.at(-1)?.String?.sval
}

function outputPosition(select: Node, name: string): number {
  let first = select
  while (first.op && first.op !== 'SETOP_NONE') first = first.larg
  return (first.targetList ?? []).findIndex((t: Node) => outputName(t.ResTarget) === name)
}

function isStar(expr: Node | undefined): boolean {
  const fields = expr?.ColumnRef?.fields as Node[] | undefined
  return fields?.at(-1)?.A_Star !== undefined
}

function functionName(node: Node): string {
  const call = node.FuncCall ?? node
  const parts = call.funcname as Node[]
  return String(parts.at(-1)?.String?.sval ?? '').toLowerCase()
}

function firstLocation(node: unknown): number | undefined {
  let found: number | undefined
  findNode(
    node,
    (n) => {
      if (typeof n.location === 'number' && n.location >= 0) found = n.location
      return found !== undefined
    },
    true,
  )
  return found
}

/** The last LIMIT, OFFSET or FETCH keyword before a byte offset (the parser keeps none). */
function keywordBefore(text: string, location: number | undefined): string | undefined {
  if (location === undefined) return undefined
  const before = Buffer.from(text, 'utf8').subarray(0, location).toString('utf8')
  const words = [...before.matchAll(/\b(LIMIT|OFFSET|FETCH)\b/gi)]
  return words.at(-1)?.[1]?.toUpperCase()
}
