import { type Kysely, type RawBuilder, sql } from 'kysely'
import { type DdlSink, executeDdl } from './ddl-sink.js'
import {
  columnList,
  displayName,
  type QualifiedTable,
  tableRef,
  type ViewObjects,
} from './names.js'
import { type SourceTree, sourceTree } from './source-tree.js'

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
 * one trigger call, and it never reads other tables (DESIGN, Capture). No code of the
 * application runs with matview's rights:
 *
 * - A column map's capture is `SECURITY DEFINER` (the application role writes sources without
 *   rights on the inbox) and converts nothing an application can define: the source column has
 *   the key's type or reaches it by a built-in immutable cast (checked at create time, see
 *   key-conversion.ts); `array_agg` only copies values.
 * - A query map's capture stages whole rows with `to_jsonb`, which calls a cast to json that
 *   the owner of a column's type may create: it is `SECURITY INVOKER`, so such a cast runs as
 *   the writer itself. The stage is a drop box: INSERT for everyone, read by matview only
 *   (`createStage`).
 *
 * Both have a fixed `search_path`, which keeps objects in other schemas from being put in their
 * way. The triggers fire `ALWAYS` where matview's role owns the source: also for writes made
 * with `session_replication_role = replica` (logical-replication subscribers, data-only
 * restores), which skip ordinary triggers.
 *
 * The triggers go on the source and on each of its partitions and inheritance children (a
 * statement fires the triggers of the table it names only), and the write triggers on each of
 * its parents (their statements change its rows too); a statement's transition tables hold the
 * rows of the whole tree below the table it names, so no row is captured twice. Returns the
 * descendants, which the catalog records: the schema watch compares them with the tree as it is
 * (`schema-watch.ts`), and copies these triggers onto a partition created later.
 */
export async function createCapture(
  trx: Kysely<any>,
  objects: ViewObjects,
  catalog: string,
  position: number,
  source: QualifiedTable,
  target: CaptureTarget,
  ddl: DdlSink = executeDdl,
): Promise<{ descendants: string[] }> {
  await markOwnDdl(trx)
  const fn = objects.captureFunction(position)
  const what =
    target.kind === 'query'
      ? `stages the changed rows of ${displayName(source)} in ${displayName(target.stage)}`
      : `appends the keys of each statement's changed rows of ${displayName(source)} to ${displayName(target.log)}`
  await ddl.run(trx, {
    comment: `Capture function: ${what}, once per statement`,
    sql: sql`
CREATE FUNCTION ${fn}() RETURNS trigger
LANGUAGE plpgsql ${target.kind === 'query' ? sql`SECURITY INVOKER` : sql`SECURITY DEFINER`} SET search_path = pg_catalog, pg_temp
AS ${sql.lit(captureFunctionBody(trx, target, catalog, objects.id))}`,
  })
  const tree = await sourceTreeByName(trx, source)
  await createCaptureTriggers(trx, objects, catalog, position, source, 'source', ddl)
  for (const table of tree.descendants) {
    await createCaptureTriggers(trx, objects, catalog, position, table, 'descendant', ddl)
  }
  for (const table of tree.ancestors) {
    await createCaptureTriggers(trx, objects, catalog, position, table, 'ancestor', ddl)
  }
  return { descendants: tree.descendants.map((t) => t.oid) }
}

/**
 * The triggers of one table of a source's tree, calling the source's capture function. A
 * parent of the source gets no TRUNCATE trigger: `TRUNCATE parent` fires the source's own.
 */
async function createCaptureTriggers(
  trx: Kysely<any>,
  objects: ViewObjects,
  catalog: string,
  position: number,
  table: QualifiedTable,
  role: 'source' | 'descendant' | 'ancestor',
  ddl: DdlSink,
): Promise<void> {
  const fn = objects.captureFunction(position)
  const on = tableRef(table)
  const label =
    role === 'source'
      ? displayName(table)
      : role === 'descendant'
        ? `${displayName(table)}, a partition or child of the source`
        : `${displayName(table)}, a parent of the source`
  await ddl.run(trx, {
    comment: `Capture triggers on ${label}: statement-level, with transition tables`,
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
  if (role !== 'ancestor') {
    await ddl.run(trx, {
      comment: 'A TRUNCATE marks the view needs_rebuild',
      sql: sql`
CREATE TRIGGER ${sql.id(objects.trigger(position, 'truncate'))} AFTER TRUNCATE ON ${on}
FOR EACH STATEMENT EXECUTE FUNCTION ${sql.id(catalog, 'mark_truncated')}()`,
    })
  }
  // Only the table's owner (or a member of its role) may change when its triggers fire: a role
  // that merely holds TRIGGER on it (docs/least-privilege.md) leaves them ordinary, and the
  // docs say what the owner runs.
  const { rows } = await sql<{ owner: boolean }>`
    SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') AS owner
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${table.schema} AND c.relname = ${table.table}`.execute(trx)
  if (!rows[0]?.owner) return
  // A parent of the source has no TRUNCATE trigger of the view's.
  const events =
    role === 'ancestor' ? CAPTURE_EVENTS.filter((e) => e !== 'truncate') : CAPTURE_EVENTS
  const always = sql.join(
    events.map((event) => sql`ENABLE ALWAYS TRIGGER ${sql.id(objects.trigger(position, event))}`),
  )
  await ddl.run(trx, {
    comment: 'They fire also for writes made with session_replication_role = replica',
    sql: sql`ALTER TABLE ${on} ${always}`,
  })
}

async function sourceTreeByName(trx: Kysely<any>, source: QualifiedTable): Promise<SourceTree> {
  const { rows } = await sql<{ oid: string | null }>`
    SELECT pg_catalog.to_regclass(pg_catalog.quote_ident(${source.schema}) || '.' ||
           pg_catalog.quote_ident(${source.table}))::oid::int8::text AS oid`.execute(trx)
  const oid = rows[0]?.oid
  return oid ? sourceTree(trx, oid) : { descendants: [], ancestors: [] }
}

/**
 * Tells the schema watch (the event triggers of `schema-watch.ts`) that the rest of this
 * transaction is matview's own DDL on sources and targets: creating, swapping or dropping a
 * view's capture must not be taken for an application's schema change.
 */
export async function markOwnDdl(trx: Kysely<any>): Promise<void> {
  await sql`SELECT pg_catalog.set_config(${OWN_DDL_SETTING}, 'on', true)`.execute(trx)
}

/** The session setting `markOwnDdl` sets, local to the transaction. */
export const OWN_DDL_SETTING = 'matview.own_ddl'

/** The events a source's capture triggers fire on, as `ViewObjects.trigger` names them. */
export const CAPTURE_EVENTS = ['insert', 'update', 'delete', 'truncate'] as const

/**
 * Keys per inbox row: a statement that changes more keys writes one row per this many (never
 * one array of them all, which fails the writer's statement past 1 GB or 134M elements). Keys
 * up to 100 kB each keep a row's arrays far below 1 GB; statements up to this size keep the
 * single statement, the one they had before chunking.
 */
export const CAPTURE_CHUNK_KEYS = 10_000

/** The text of a capture function's body, as `createCapture` creates it (and `create` checks). */
export function captureFunctionBody(
  db: Kysely<any>,
  target: CaptureTarget,
  catalog: string,
  id: number,
  chunk: number = CAPTURE_CHUNK_KEYS,
): string {
  return compileConstant(db, functionBody(target, notifyStatement(catalog, id), chunk))
}

function functionBody(
  target: CaptureTarget,
  notify: RawBuilder<unknown>,
  chunk: number,
): RawBuilder<unknown> {
  let insert: RawBuilder<unknown>
  let update: RawBuilder<unknown>
  let remove: RawBuilder<unknown>
  let declare = sql``
  if (target.kind === 'query') {
    // Whole rows as jsonb: the stage does not depend on the source's columns, so adding,
    // dropping or renaming one never breaks a writer; the batch reads them back by column name
    // with the source's current row type. Both images of an update: the mapping may need
    // either. (SECURITY INVOKER: to_jsonb may call a cast of the application's, see above.)
    const into = sql`INSERT INTO ${tableRef(target.stage)} (row)`
    const rows = (transition: string) =>
      sql`SELECT pg_catalog.to_jsonb(r) FROM ${sql.id(transition)} AS r`
    insert = sql`${into} ${rows('new_rows')}`
    update = sql`${into} ${rows('new_rows')} UNION ALL ${rows('old_rows')}`
    remove = sql`${into} ${rows('old_rows')}`
  } else {
    // One inbox row per statement, each key column an array of the statement's keys: a
    // 1,000-row UPDATE writes one row, not 1,000 (each a heap insert and its WAL). Duplicates
    // stay in: deduplicating cost the writer a sort or a hash per statement, and the move
    // deduplicates them anyway. An update logs the old and the new key, as a row can move
    // between keys. A NULL key names no view row (the view's key is NOT NULL), so it is not
    // logged; a statement that changed no row logs nothing. The source columns have the key's
    // types, or reach them by a built-in immutable cast (checked at create time): no
    // conversion the application could define runs here.
    //
    // Past `chunk` keys the first row is full (its key count says so, `RETURNING … INTO`): the
    // rest go in rows of `chunk` keys, numbered in the transition tables' order, which a second
    // scan reads alike. The common statement pays a LIMIT and the RETURNING, a few µs at most
    // (CHANGELOG). Aliased columns (c.k1, …): a source column may have any name; use_column: a
    // column named like the variable is the column.
    declare = sql`
#variable_conflict use_column
DECLARE
  logged integer;`
    const aliases = target.sourceColumns.map((_, i) => `k${i + 1}`)
    const arrays = sql.join(aliases.map((a) => sql`pg_catalog.array_agg(c.${sql.id(a)})`))
    const notNull = sql.join(
      target.sourceColumns.map((c) => sql`${sql.id(c)} IS NOT NULL`),
      sql` AND `,
    )
    const cols = columnList(target.sourceColumns)
    const into = sql`INSERT INTO ${tableRef(target.log)} (${columnList(target.keyColumns)})`
    const keys = (from: RawBuilder<unknown>) => sql`${into}
    SELECT ${arrays} FROM (SELECT ${cols} FROM ${from} WHERE ${notNull} LIMIT ${sql.lit(chunk)}) AS c(${columnList(aliases)})
    HAVING pg_catalog.count(*) > 0
    RETURNING pg_catalog.cardinality(${sql.id(target.keyColumns[0]!)}) INTO logged;
    IF logged = ${sql.lit(chunk)} THEN
      ${into}
      SELECT ${arrays} FROM (
        SELECT ${cols}, (pg_catalog.row_number() OVER () - 1) / ${sql.lit(chunk)}
        FROM ${from} WHERE ${notNull} OFFSET ${sql.lit(chunk)}
      ) AS c(${columnList([...aliases, 'chunk'])})
      GROUP BY c.chunk;
    END IF`
    insert = keys(sql`new_rows`)
    update = keys(
      sql`(SELECT ${cols} FROM new_rows UNION ALL SELECT ${cols} FROM old_rows) AS changed`,
    )
    remove = keys(sql`old_rows`)
  }
  return sql`${declare}
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
    const { rows } = await sql<{ name: string; body: string; definer: boolean }>`
      SELECT p.proname AS name, p.prosrc AS body, p.prosecdef AS definer
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = ${catalog} AND p.proname ~ '^capture_[0-9]+_[0-9]+$'
        AND p.prosrc NOT LIKE '%pg_notify%' AND p.prosrc <> ${SILENT_CAPTURE_BODY}`.execute(trx)
    for (const row of rows) {
      const id = Number(row.name.split('_')[1])
      const end = /RETURN NULL;\s*END\s*$/
      if (!end.test(row.body)) continue
      const notify = compileConstant(trx, notifyStatement(catalog, id))
      const body = row.body.replace(end, `${notify}\n  RETURN NULL;\nEND`)
      // Its security as it is: a query map's capture runs as the writer (migration 8).
      await sql`
        CREATE OR REPLACE FUNCTION ${sql.id(catalog, row.name)}() RETURNS trigger
        LANGUAGE plpgsql ${row.definer ? sql`SECURITY DEFINER` : sql`SECURITY INVOKER`} SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(body)}`.execute(trx)
    }
    return rows.length
  })
}

/**
 * Makes the query-mapped capture functions of views created before `SECURITY INVOKER` (they ran
 * `to_jsonb` over the application's types with matview's rights, see `createCapture`), and lets
 * every role stage rows into their stages, as `createStage` does now. A catalog migration: any
 * matview command of this version does it before anything else.
 */
export async function invokeQueryCaptures(trx: Kysely<any>, catalog: string): Promise<void> {
  // One DO block, values as literals: `matview sql` prints the migrations it runs.
  const body = compileConstant(
    trx,
    sql`
DECLARE
  f record;
BEGIN
  FOR f IN
    SELECT p.proname FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ${sql.lit(catalog)} AND p.proname ~ '^capture_[0-9]+_[0-9]+$'
      AND p.prosecdef AND p.prosrc LIKE '%pg_catalog.to_jsonb(r)%'
  LOOP
    EXECUTE pg_catalog.format('ALTER FUNCTION %I.%I() SECURITY INVOKER', ${sql.lit(catalog)}, f.proname);
  END LOOP;
  FOR f IN
    SELECT c.relname FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${sql.lit(catalog)} AND c.relname ~ '^stage_[0-9]+_[0-9]+$' AND c.relkind = 'r'
  LOOP
    EXECUTE pg_catalog.format('GRANT INSERT ON %I.%I TO PUBLIC', ${sql.lit(catalog)}, f.relname);
  END LOOP;
  EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA %I TO PUBLIC', ${sql.lit(catalog)});
END`,
  )
  await sql`DO ${sql.lit(body)}`.execute(trx)
}

/** Compiles SQL that must carry no bind parameters (it becomes a function body). */
export function compileConstant(db: Kysely<any>, raw: RawBuilder<unknown>): string {
  const compiled = raw.compile(db)
  if (compiled.parameters.length > 0) {
    throw new Error('internal: a function body must not carry bind parameters')
  }
  return compiled.sql
}
