import { type Kysely, type RawBuilder, sql } from 'kysely'
import { type DdlSink, executeDdl } from './ddl-sink.js'
import {
  columnList,
  displayName,
  type QualifiedTable,
  tableRef,
  type ViewObjects,
} from './names.js'

/** What the capture triggers on one source write, and where. */
export type CaptureTarget =
  | {
      /**
       * The changed row holds the key: append `keyColumns` from `sourceColumns` (same order),
       * as arrays, to `log` (the view's inbox).
       */
      kind: 'columns'
      log: QualifiedTable
      keyColumns: string[]
      sourceColumns: string[]
    }
  | {
      /** The key comes from a query over other tables: stage the rows, map them at claim time. */
      kind: 'query'
      stage: QualifiedTable
    }

/**
 * Creates the capture function and the statement-level triggers of one source. The function
 * copies from the transition tables in one INSERT … SELECT per statement, so a bulk write costs
 * one trigger call, and it never reads other tables (DESIGN, Capture). `SECURITY DEFINER` with a
 * fixed `search_path` lets the application role write sources without rights on the log, and
 * keeps objects in other schemas from being put in its way.
 */
export async function createCapture(
  trx: Kysely<any>,
  objects: ViewObjects,
  catalog: string,
  position: number,
  source: QualifiedTable,
  target: CaptureTarget,
  ddl: DdlSink = executeDdl,
): Promise<void> {
  const fn = objects.captureFunction(position)
  const on = tableRef(source)
  const what =
    target.kind === 'query'
      ? `stages the changed rows of ${displayName(source)} in ${displayName(target.stage)}`
      : `appends the keys of each statement's changed rows of ${displayName(source)} to ${displayName(target.log)}`
  await ddl.run(trx, {
    comment: `Capture function: ${what}, once per statement`,
    sql: sql`
CREATE FUNCTION ${fn}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS ${sql.lit(captureFunctionBody(trx, target, catalog, objects.id))}`,
  })
  await ddl.run(trx, {
    comment: `Capture triggers on ${displayName(source)}: statement-level, with transition tables`,
    sql: sql`
CREATE TRIGGER ${sql.id(objects.trigger(position, 'insert'))} AFTER INSERT ON ${on}
REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  })
  await ddl.run(trx, {
    comment: '',
    sql: sql`
CREATE TRIGGER ${sql.id(objects.trigger(position, 'update'))} AFTER UPDATE ON ${on}
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  })
  await ddl.run(trx, {
    comment: '',
    sql: sql`
CREATE TRIGGER ${sql.id(objects.trigger(position, 'delete'))} AFTER DELETE ON ${on}
REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
  })
  await ddl.run(trx, {
    comment: 'A TRUNCATE marks the view needs_rebuild',
    sql: sql`
CREATE TRIGGER ${sql.id(objects.trigger(position, 'truncate'))} AFTER TRUNCATE ON ${on}
FOR EACH STATEMENT EXECUTE FUNCTION ${sql.id(catalog, 'mark_truncated')}()`,
  })
}

/** The text of a capture function's body, as `createCapture` creates it (and `create` checks). */
export function captureFunctionBody(
  db: Kysely<any>,
  target: CaptureTarget,
  catalog: string,
  id: number,
): string {
  return compileConstant(db, functionBody(target, notifyStatement(catalog, id)))
}

function functionBody(target: CaptureTarget, notify: RawBuilder<unknown>): RawBuilder<unknown> {
  let insert: RawBuilder<unknown>
  let update: RawBuilder<unknown>
  let remove: RawBuilder<unknown>
  if (target.kind === 'query') {
    // Whole rows as jsonb: the stage does not depend on the source's columns, so adding,
    // dropping or renaming one never breaks a writer; the batch reads them back with the
    // source's current row type. Both images of an update: the mapping may need either.
    const into = sql`INSERT INTO ${tableRef(target.stage)} (row)`
    const rows = (transition: string) =>
      sql`SELECT pg_catalog.to_jsonb(r) FROM ${sql.id(transition)} AS r`
    insert = sql`${into} ${rows('new_rows')}`
    update = sql`${into} ${rows('new_rows')} UNION ALL ${rows('old_rows')}`
    remove = sql`${into} ${rows('old_rows')}`
  } else {
    const cols = columnList(target.sourceColumns)
    // One inbox row per statement, each key column an array of the statement's keys: a
    // 1,000-row UPDATE writes one row, not 1,000 (each a heap insert and its WAL). Duplicates
    // stay in: deduplicating cost the writer a sort or a hash per statement, and the move
    // deduplicates them anyway. An update logs the old and the new key, as a row can move
    // between keys. A NULL key names no view row (the view's key is NOT NULL), so it is not
    // logged; a statement that changed no row logs nothing.
    const notNull = sql.join(
      target.sourceColumns.map((c) => sql`${sql.id(c)} IS NOT NULL`),
      sql` AND `,
    )
    const arrays = sql.join(
      target.sourceColumns.map((c) => sql`pg_catalog.array_agg(${sql.id(c)})`),
    )
    const keys = (from: RawBuilder<unknown>) =>
      sql`INSERT INTO ${tableRef(target.log)} (${columnList(target.keyColumns)})
    SELECT ${arrays} FROM ${from} WHERE ${notNull} HAVING pg_catalog.count(*) > 0`
    insert = keys(sql`new_rows`)
    update = keys(
      sql`(SELECT ${cols} FROM new_rows UNION ALL SELECT ${cols} FROM old_rows) AS changed`,
    )
    remove = keys(sql`old_rows`)
  }
  return sql`
BEGIN
  IF TG_OP = 'INSERT' THEN
    ${insert};
  ELSIF TG_OP = 'UPDATE' THEN
    ${update};
  ELSE
    ${remove};
  END IF;
  ${notify}
  RETURN NULL;
END`
}

/** The channel the capture triggers of a catalog notify, with the view's id as payload. */
export function notifyChannel(catalog: string): string {
  return `matview:${catalog}`
}

/**
 * A session notifies a view's channel at most once per this window. NOTIFY serializes the
 * commits of the transactions that send one (a database-wide lock at commit): notifying on
 * every write cut 8 concurrent writers from ~4,000-5,000 to 500-3,400 commits/s, the throttled
 * form costs nothing measurable (CHANGELOG). The worker checks once more after a run this long,
 * so a write whose notify was skipped is not left waiting for the poll.
 */
export const NOTIFY_WINDOW_MS = 100

/**
 * Notifies `matview:<catalog>` with the view id, unless this session did within the window.
 * The time of the last notify lives in a session setting (`matview.notified_<id>`): no table
 * is read, and a rolled-back write un-sets it with the notify it would have sent.
 */
export function notifyStatement(catalog: string, id: number): RawBuilder<unknown> {
  const setting = sql.lit(`matview.notified_${id}`)
  // date_part, not extract: float8 arithmetic, where extract's numeric cost every statement.
  const now = sql`pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())`
  return sql`IF ${now} >= coalesce(nullif(pg_catalog.current_setting(${setting}, true), '')::float8, 0) + ${sql.lit(NOTIFY_WINDOW_MS / 1000)} THEN
    PERFORM set_config(${setting}, ${now}::text, false);
    PERFORM pg_notify(${sql.lit(notifyChannel(catalog))}, ${sql.lit(String(id))});
  END IF;`
}

/**
 * The body of a retired capture function whose triggers matview may not drop (it does not own
 * the table): it does nothing (see retire-capture.ts), and gets no notify.
 */
export const SILENT_CAPTURE_BODY = 'BEGIN RETURN NULL; END'

/**
 * Adds the notify to capture functions created before it existed (matview 0.1), so views
 * created then wake the worker too. Rewrites only functions that lack it; each is replaced
 * in one transaction, under a lock, so two workers starting at once do not collide.
 * Returns how many it replaced.
 */
export async function addNotifyToCaptures(db: Kysely<any>, catalog: string): Promise<number> {
  return db.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext(${catalog}), hashtext('matview:capture-notify'))`.execute(
      trx,
    )
    const { rows } = await sql<{ name: string; body: string }>`
      SELECT p.proname AS name, p.prosrc AS body
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = ${catalog} AND p.proname ~ '^capture_[0-9]+_[0-9]+$'
        AND p.prosrc NOT LIKE '%pg_notify%' AND p.prosrc <> ${SILENT_CAPTURE_BODY}`.execute(trx)
    for (const row of rows) {
      const id = Number(row.name.split('_')[1])
      const end = /RETURN NULL;\s*END\s*$/
      if (!end.test(row.body)) continue
      const notify = compileConstant(trx, notifyStatement(catalog, id))
      const body = row.body.replace(end, `${notify}\n  RETURN NULL;\nEND`)
      await sql`
        CREATE OR REPLACE FUNCTION ${sql.id(catalog, row.name)}() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(body)}`.execute(trx)
    }
    return rows.length
  })
}

/** Compiles SQL that must carry no bind parameters (it becomes a function body). */
export function compileConstant(db: Kysely<any>, raw: RawBuilder<unknown>): string {
  const compiled = raw.compile(db)
  if (compiled.parameters.length > 0) {
    throw new Error('internal: a function body must not carry bind parameters')
  }
  return compiled.sql
}
