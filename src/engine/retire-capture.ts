import { type Kysely, sql } from 'kysely'
import { errorMessage } from '../errors/matview-error.js'
import { SILENT_CAPTURE_BODY } from './capture-ddl.js'
import { displayName, type QualifiedTable, tableRef, viewObjects } from './names.js'
import { onSource, type SourceDdlOptions } from './source-ddl.js'

/**
 * Removes the capture objects of ids the catalog no longer names: a view dropped, the live
 * objects a swap replaced, a rebuild discarded, a view discarded before it was ready. Those
 * steps only forget the id, in their own transaction, and lock no source; this drops the
 * triggers afterwards, each source table in its own short transaction (see `onSource`), and
 * then the id's functions, stages, log and inbox, which the triggers wrote to until they went.
 * Until then a forgotten id's triggers still append to its inbox, which nothing reads.
 *
 * Anything left (a source held by a long transaction) is found again by the next call: after
 * every swap, drop and discard, and at each `update`. Never throws: returns what it could not
 * remove, for a note.
 */
export async function retireCapture(
  db: Kysely<any>,
  catalog: string,
  given: SourceDdlOptions = {},
): Promise<string[]> {
  // Cleanup that can wait: a source held longer than a few tries is left for the next call.
  const options = { attempts: RETIRE_ATTEMPTS, ...given }
  const left: string[] = []
  let triggers: RetiredTrigger[]
  try {
    const { rows } = await sql<{ found: boolean }>`
      SELECT pg_catalog.to_regclass(pg_catalog.quote_ident(${catalog}) || '.views') IS NOT NULL AS found`.execute(
      db,
    )
    if (!rows[0]?.found) return []
    triggers = await retiredTriggers(db, catalog)
  } catch (error) {
    return [`looking for retired capture failed: ${errorMessage(error)}`]
  }
  const blocked = new Set<number>()
  for (const group of groupByTable(triggers)) {
    if (!group.owned) {
      // DROP TRIGGER needs the table's owner, which matview's role need not be
      // (least-privilege.md): the triggers stay, and their functions, which matview owns,
      // become no-ops (no table lock), so writes stop appending to an inbox nothing reads.
      blocked.add(group.id)
      try {
        if (await silence(db, catalog, group.triggers)) {
          left.push(
            `capture triggers ${group.triggers.map((t) => `"${t}"`).join(', ')} on "${displayName(group.table)}" now do nothing; only the table's owner can drop them`,
          )
        }
      } catch (error) {
        left.push(`capture triggers on "${displayName(group.table)}": ${errorMessage(error)}`)
      }
      continue
    }
    try {
      await onSource(
        db,
        `capture ${group.id}`,
        displayName(group.table),
        async (trx) => {
          for (const name of group.triggers) {
            await sql`DROP TRIGGER IF EXISTS ${sql.id(name)} ON ${tableRef(group.table)}`.execute(
              trx,
            )
          }
        },
        options,
      )
    } catch (error) {
      blocked.add(group.id)
      left.push(`capture triggers on "${displayName(group.table)}": ${errorMessage(error)}`)
    }
  }
  let ids: number[]
  try {
    ids = await retiredIds(db, catalog)
  } catch (error) {
    return [...left, `looking for retired capture failed: ${errorMessage(error)}`]
  }
  for (const id of ids) {
    if (blocked.has(id)) continue
    try {
      await dropObjects(db, catalog, id)
    } catch (error) {
      left.push(`capture objects of id ${id}: ${errorMessage(error)}`)
    }
  }
  return left
}

/** Tries per source table before its old triggers are left for a later call. */
const RETIRE_ATTEMPTS = 5

interface RetiredTrigger {
  id: number
  name: string
  oid: string
  table: QualifiedTable
  /** matview's role owns the table (or is a member of its owner): it may drop triggers. */
  owned: boolean
}

/** The ids views and rebuilds use now: every other id's objects are retired. */
function usedIds(catalog: string) {
  return sql`(SELECT id FROM ${sql.id(catalog, 'views')}
              UNION ALL SELECT rebuild_id FROM ${sql.id(catalog, 'views')} WHERE rebuild_id IS NOT NULL)`
}

/** Triggers named `<catalog>_<id>_<position>_<event>` that run a function of the catalog. */
async function retiredTriggers(db: Kysely<any>, catalog: string): Promise<RetiredTrigger[]> {
  const { rows } = await sql<{
    id: string
    name: string
    oid: string
    schema: string
    table: string
    owned: boolean
  }>`
    SELECT split_part(substr(t.tgname, length(${catalog}) + 2), '_', 1) AS id, t.tgname AS name,
           c.oid::int8::text AS oid, n.nspname AS schema, c.relname AS table,
           pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owned
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
    JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE NOT t.tgisinternal AND pn.nspname = ${catalog}
      AND left(t.tgname, length(${catalog}) + 1) = ${catalog} || '_'
      AND substr(t.tgname, length(${catalog}) + 2) ~ '^[0-9]+_[0-9]+_(insert|update|delete|truncate)$'
      AND split_part(substr(t.tgname, length(${catalog}) + 2), '_', 1)::int8 NOT IN ${usedIds(catalog)}
    ORDER BY 1, c.oid, t.tgname`.execute(db)
  return rows.map((r) => ({
    id: Number(r.id),
    name: r.name,
    oid: r.oid,
    table: { schema: r.schema, table: r.table },
    owned: r.owned === true,
  }))
}

function groupByTable(triggers: RetiredTrigger[]) {
  const groups = new Map<
    string,
    { id: number; table: QualifiedTable; owned: boolean; triggers: string[] }
  >()
  for (const t of triggers) {
    const key = `${t.id}:${t.oid}`
    const group = groups.get(key) ?? { id: t.id, table: t.table, owned: t.owned, triggers: [] }
    group.triggers.push(t.name)
    groups.set(key, group)
  }
  return [...groups.values()]
}

/** Ids whose functions or tables are still in the catalog schema and that no view uses. */
async function retiredIds(db: Kysely<any>, catalog: string): Promise<number[]> {
  const { rows } = await sql<{ id: string }>`
    SELECT DISTINCT substring(name from '^[a-z]+_([0-9]+)') AS id FROM (
      SELECT c.relname::text AS name FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${catalog} AND c.relkind IN ('r', 'p')
        AND c.relname ~ '^((log|inbox)_[0-9]+|stage_[0-9]+_[0-9]+)$'
      UNION ALL
      SELECT p.proname::text FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = ${catalog} AND p.proname ~ '^capture_[0-9]+_[0-9]+$'
    ) AS objects
    WHERE substring(name from '^[a-z]+_([0-9]+)')::int8 NOT IN ${usedIds(catalog)}
    ORDER BY 1`.execute(db)
  return rows.map((r) => Number(r.id))
}

/**
 * Drops a retired id's functions, stages, log and inbox, once no trigger of it is left (looked
 * at again here: a trigger still there would fail every write once its function is gone).
 */
async function dropObjects(db: Kysely<any>, catalog: string, id: number): Promise<void> {
  const objects = viewObjects(catalog, id)
  await db.transaction().execute(async (trx) => {
    // Two processes retiring the same id would collide on the catalog rows they delete.
    await sql`SELECT pg_advisory_xact_lock(hashtext(${catalog}), hashtext('matview:retire'))`.execute(
      trx,
    )
    const { rows: still } = await sql<{ n: string }>`
      SELECT count(*) AS n FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
      JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
      WHERE pn.nspname = ${catalog} AND left(t.tgname, length(${`${catalog}_${id}_`})) = ${`${catalog}_${id}_`}`.execute(
      trx,
    )
    if (Number(still[0]!.n) > 0) return
    const { rows } = await sql<{ kind: string; name: string }>`
      SELECT 'function' AS kind, p.proname::text AS name FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = ${catalog} AND p.proname ~ ${`^capture_${id}_[0-9]+$`}
      UNION ALL
      SELECT 'table', c.relname::text FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = ${catalog} AND c.relkind IN ('r', 'p')
        AND c.relname ~ ${`^stage_${id}_[0-9]+$`}`.execute(trx)
    for (const row of rows) {
      if (row.kind === 'function') {
        await sql`DROP FUNCTION IF EXISTS ${sql.id(catalog, row.name)}()`.execute(trx)
      } else {
        await sql`DROP TABLE IF EXISTS ${sql.id(catalog, row.name)}`.execute(trx)
      }
    }
    await sql`DROP TABLE IF EXISTS ${tableRef(objects.log)}, ${tableRef(objects.inbox)}`.execute(
      trx,
    )
  })
}

/**
 * Replaces the capture functions the triggers named run with ones that do nothing; returns
 * how many it changed (none once they are silent). The truncate triggers run the catalog's
 * shared marker, which marks only the views that read the table: left as it is.
 */
async function silence(db: Kysely<any>, catalog: string, triggers: string[]): Promise<number> {
  const prefix = `${catalog}_`
  const body = SILENT_CAPTURE_BODY
  return db.transaction().execute(async (trx) => {
    let changed = 0
    for (const trigger of triggers) {
      const [id, position, event] = trigger.slice(prefix.length).split('_')
      if (event === 'truncate') continue
      const name = `capture_${id}_${position}`
      const { rows } = await sql<{ silent: boolean }>`
        SELECT p.prosrc = ${body} AS silent FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ${catalog} AND p.proname = ${name}`.execute(trx)
      if (rows[0]?.silent !== false) continue
      await sql`
        CREATE OR REPLACE FUNCTION ${sql.id(catalog, name)}() RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(body)}`.execute(trx)
      changed++
    }
    return changed
  })
}
