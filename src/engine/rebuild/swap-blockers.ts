import { type Kysely, sql } from 'kysely'
import { UsageError } from '../../errors/matview-error.js'
import { displayName, type QualifiedTable } from '../names.js'

/**
 * What depends on the live target and would stop the swap's DROP (plain and materialized views,
 * foreign keys) or be lost by it without a word (row-level security, triggers that are not
 * matview's). Grants, comments, indexes and matview's own capture are carried over; these are
 * not, so the rebuild refuses before it starts, naming them.
 */
export async function swapBlockers(
  db: Kysely<any>,
  catalog: string,
  oid: string,
): Promise<string[]> {
  const { rows } = await sql<{ what: string }>`
    SELECT DISTINCT format('%s "%s.%s"', CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END,
                           vn.nspname, v.relname) AS what
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
    JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
    WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND d.refobjid = ${oid}::int8::oid AND v.oid <> ${oid}::int8::oid
    UNION ALL
    SELECT format('foreign key "%s" of table "%s.%s"', con.conname, cn.nspname, c.relname)
    FROM pg_catalog.pg_constraint con
    JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
    JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
    WHERE con.contype = 'f' AND con.confrelid = ${oid}::int8::oid
    UNION ALL
    SELECT format('row-level security policy "%s"', polname)
    FROM pg_catalog.pg_policy WHERE polrelid = ${oid}::int8::oid
    UNION ALL
    SELECT 'row-level security (enabled on the table)'
    FROM pg_catalog.pg_class WHERE oid = ${oid}::int8::oid AND relrowsecurity
    UNION ALL
    SELECT format('trigger "%s"', t.tgname)
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
    JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
    WHERE t.tgrelid = ${oid}::int8::oid AND NOT t.tgisinternal AND pn.nspname <> ${catalog}
    ORDER BY 1`.execute(db)
  return rows.map((r) => r.what)
}

/** Throws when anything would stop the swap or be lost by it. */
export async function refuseBlockedSwap(
  db: Kysely<any>,
  catalog: string,
  view: string,
  target: QualifiedTable,
  oid: string,
): Promise<void> {
  const blockers = await swapBlockers(db, catalog, oid)
  if (blockers.length === 0) return
  throw new UsageError(
    `cannot rebuild view "${view}": the swap replaces table "${displayName(target)}", and ${blockers.join(', ')} ${blockers.length > 1 ? 'depend' : 'depends'} on it (rebuild carries over indexes, grants and comments, not these); drop ${blockers.length > 1 ? 'them' : 'it'} first and create ${blockers.length > 1 ? 'them' : 'it'} again after the rebuild`,
  )
}
