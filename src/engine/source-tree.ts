import { type Kysely, sql } from 'kysely'
import type { FoundTable } from './inspect-definition.js'

/**
 * The tables around a source in an inheritance or partition tree. PostgreSQL fires a statement
 * trigger only on the table a statement names, never on its partitions or children (nor on its
 * parents), so capture goes on every one of them: a write naming a partition of a source, or a
 * parent of a source that is a partition, is captured like a write naming the source.
 */
export interface SourceTree {
  /** Partitions and inheritance children, at every level. */
  descendants: FoundTable[]
  /** Parents, at every level: their statements change the source's rows too. */
  ancestors: FoundTable[]
}

export async function sourceTree(db: Kysely<any>, oid: string): Promise<SourceTree> {
  const { rows } = await sql<FoundTable & { side: 'down' | 'up' }>`
    WITH RECURSIVE down(oid) AS (
      SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = ${oid}::int8::oid
      UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN down ON i.inhparent = down.oid
    ), up(oid) AS (
      SELECT inhparent FROM pg_catalog.pg_inherits WHERE inhrelid = ${oid}::int8::oid
      UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.oid
    )
    SELECT t.side, c.oid::int8::text AS oid, n.nspname AS schema, c.relname AS table, c.relkind AS kind
    FROM (SELECT 'down' AS side, oid FROM down UNION ALL SELECT 'up', oid FROM up) AS t
    JOIN pg_catalog.pg_class c ON c.oid = t.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    ORDER BY c.oid`.execute(db)
  const strip = ({ side: _, ...table }: FoundTable & { side: string }): FoundTable => table
  return {
    descendants: rows.filter((r) => r.side === 'down').map(strip),
    ancestors: rows.filter((r) => r.side === 'up').map(strip),
  }
}
