import { createHash } from 'node:crypto'
import type { Kysely, RawBuilder } from 'kysely'
import { ViewDefinitionError } from '../errors/matview-error.js'
import type { DeclarativeView, SourceMapping } from '../views/declarative.js'

/**
 * The SQL text of a view's query or mapping. A view is a definition, like `CREATE VIEW`: it
 * cannot take bind parameters, because its query also goes into DDL (the probe view) and is
 * re-run by every batch. Constants belong in the SQL, or in `sql.lit(…)`, which quotes them.
 */
export function constantSql(
  db: Kysely<any>,
  view: string,
  what: string,
  raw: RawBuilder<unknown>,
): string {
  const compiled = raw.compile(db)
  if (compiled.parameters.length > 0) {
    throw new ViewDefinitionError(
      view,
      `${what} has ${compiled.parameters.length} interpolated value(s); a view's SQL must be constant: write them as SQL literals or with sql.lit(value)`,
    )
  }
  return compiled.sql
}

export function isQueryMapping(mapping: SourceMapping): mapping is RawBuilder<unknown> {
  return typeof (mapping as { compile?: unknown }).compile === 'function'
}

/**
 * A hash of everything that decides the target's content and shape. A different hash means
 * the rows in the target were computed by another definition.
 */
export function definitionHash(db: Kysely<any>, view: DeclarativeView): string {
  const sources = Object.keys(view.sources)
    .sort()
    .map((name) => {
      const mapping = view.sources[name]!
      return [
        name,
        isQueryMapping(mapping)
          ? { query: constantSql(db, view.name, `the mapping of source "${name}"`, mapping) }
          : Object.fromEntries(Object.entries(mapping).sort()),
      ]
    })
  const canonical = JSON.stringify({
    query: constantSql(db, view.name, 'the query', view.query).trim(),
    key: view.key,
    sources,
    indexes: view.indexes ?? [],
    // Only when split: views defined before partitions existed keep their hash.
    ...(viewPartitions(view) > 1 ? { partitions: viewPartitions(view) } : {}),
    // Only when set: dropping it must ask for a rebuild, whose checks refuse a query that is
    // not key-local without it (and views defined before it existed keep their hash).
    ...(view.strategy === 'rebuild' ? { strategy: view.strategy } : {}),
  })
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16)
}

/** A view's source names in a stable order: a source's position names its objects. */
export function sourceNames(view: DeclarativeView): string[] {
  return Object.keys(view.sources).sort()
}

/** How many hash partitions the view's change log has (1: not split). */
export function viewPartitions(view: DeclarativeView): number {
  return view.partitions ?? 1
}
