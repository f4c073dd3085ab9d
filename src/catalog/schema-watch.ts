import { type Kysely, type RawBuilder, sql } from 'kysely'

/**
 * The schema watch (catalog migration 7): notices a source dropped, renamed, replaced, a mapped
 * column renamed, dropped or retyped, and a partition or inheritance child attached, detached,
 * created or dropped, and repairs the capture or marks the view. One function,
 * `check_sources(view, …)`, does it; it runs at the start of every run (the floor, for any
 * role), read-only for `status`, and from two event triggers where the role may create them
 * (superuser), so it also acts at the moment of the application's DDL, inside its transaction.
 *
 * Every view's capture is found by its trigger names (`<catalog>_<id>_<position>_<event>`, see
 * `viewObjects`) and its function (`capture_<id>_<position>`); `view_sources` records the oid,
 * the descendants and the mapped columns' types each capture was made for, and a rebuild's
 * sources the same in `rebuild_sources`.
 */
export async function installSchemaWatch(trx: Kysely<any>, schema: string): Promise<void> {
  const s = sql.id(schema)
  await sql`
    ALTER TABLE ${s}.view_sources
      -- its partitions and inheritance children that carry its capture (NULL: not recorded yet)
      ADD COLUMN descendants oid[],
      -- the source columns a column map reads, [{name, type}], as the capture was made for them
      ADD COLUMN mapped_columns jsonb`.execute(trx)
  await createFunction(trx, sql`${s}.mark_truncated() RETURNS trigger`, markTruncated(s), {
    definer: true,
  })
  await createFunction(
    trx,
    sql`${s}.copy_capture(p_from oid, p_to oid, p_names text[]) RETURNS void`,
    copyCapture(),
  )
  await createFunction(
    trx,
    sql`${s}.check_sources(p_view text, p_created oid, p_altered oid, p_repair boolean) RETURNS text[]`,
    checkSources(s, schema),
  )
  // Inside the application's DDL transaction: a lock matview holds (a rebuild's swap) makes the
  // watch give up after a moment (a WARNING, the next run checks), never hold the DDL long.
  await createFunction(trx, sql`${s}.watch_ddl() RETURNS event_trigger`, watchDdl(s), {
    definer: true,
    lockTimeout: true,
  })
  await createFunction(trx, sql`${s}.watch_drop() RETURNS event_trigger`, watchDrop(s), {
    definer: true,
    lockTimeout: true,
  })
  await createEventTriggers(trx, schema)
}

/** How long the event triggers wait for a lock before they give up (and warn). */
const WATCH_LOCK_TIMEOUT = '2s'

/** The setting `markOwnDdl` (capture-ddl.ts) sets: the watch leaves matview's own DDL alone. */
const OWN = sql.lit('matview.own_ddl')

/**
 * Creates the event triggers when the role may (PostgreSQL 15 lets only superusers create
 * them); otherwise the check at each run start is all there is (docs/reliability.md). They are
 * database-wide: they do nothing for DDL that touches no source, never fail the application's
 * DDL (errors become a WARNING, and the next run checks again), and go with the catalog's
 * functions (`DROP SCHEMA matview CASCADE` drops them).
 */
export async function createEventTriggers(trx: Kysely<any>, schema: string): Promise<boolean> {
  const { rows } = await sql<{ superuser: boolean }>`
    SELECT rolsuper AS superuser FROM pg_catalog.pg_roles WHERE rolname = current_user`.execute(trx)
  if (!rows[0]?.superuser) return false
  // Names are database-wide and cut at 63 bytes: a catalog whose cut name another catalog of
  // the database already took keeps to the run-start check.
  const { rows: taken } = await sql<{ n: number }>`
    SELECT count(*)::int AS n FROM pg_catalog.pg_event_trigger
    WHERE evtname IN (${eventTriggerName(schema, 'ddl')}::name, ${eventTriggerName(schema, 'drop')}::name)`.execute(
    trx,
  )
  if (taken[0]!.n > 0) return false
  await sql`
    CREATE EVENT TRIGGER ${sql.id(eventTriggerName(schema, 'ddl'))} ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
    EXECUTE FUNCTION ${sql.id(schema, 'watch_ddl')}()`.execute(trx)
  await sql`
    CREATE EVENT TRIGGER ${sql.id(eventTriggerName(schema, 'drop'))} ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION ${sql.id(schema, 'watch_drop')}()`.execute(trx)
  return true
}

/** Event triggers are named database-wide: the catalog's name keeps two catalogs apart. */
export function eventTriggerName(schema: string, event: 'ddl' | 'drop'): string {
  return `${schema}_watch_${event}`
}

async function createFunction(
  trx: Kysely<any>,
  signature: RawBuilder<unknown>,
  body: RawBuilder<unknown>,
  options: { definer?: boolean; lockTimeout?: boolean } = {},
): Promise<void> {
  const text = body.compile(trx)
  if (text.parameters.length > 0) throw new Error('internal: a function body carries parameters')
  await sql`
    CREATE OR REPLACE FUNCTION ${signature}
    LANGUAGE plpgsql ${options.definer ? sql`SECURITY DEFINER` : sql``}
    SET search_path = pg_catalog, pg_temp
    ${options.lockTimeout ? sql`SET lock_timeout = ${sql.lit(WATCH_LOCK_TIMEOUT)}` : sql``}
    AS ${sql.lit(text.sql)}`.execute(trx)
}

/**
 * The TRUNCATE marker of migration 3, also for a partition or child of a source (the capture
 * put its own TRUNCATE trigger there).
 */
function markTruncated(s: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    BEGIN
      UPDATE ${s}.views v
      SET state = CASE WHEN v.state = 'rebuilding' THEN v.state ELSE 'needs_rebuild' END,
          state_reason = CASE WHEN vs.source_oid = TG_RELID
                              THEN format('source %I.%I was truncated', TG_TABLE_SCHEMA, TG_TABLE_NAME)
                              ELSE format('%I.%I, a partition or child of source %I.%I, was truncated',
                                          TG_TABLE_SCHEMA, TG_TABLE_NAME, vs.source_schema, vs.source_table)
                         END,
          updated_at = now()
      FROM ${s}.view_sources vs
      WHERE vs.view = v.name AND (vs.source_oid = TG_RELID OR TG_RELID = ANY (vs.descendants));
      UPDATE ${s}.views v
      SET rebuild_stale = format('source %I.%I was truncated during the rebuild',
                                 TG_TABLE_SCHEMA, TG_TABLE_NAME),
          updated_at = now()
      WHERE v.rebuild_id IS NOT NULL
        AND EXISTS (SELECT 1 FROM jsonb_array_elements(v.rebuild_sources) AS e
                    WHERE (e->>'oid')::oid = TG_RELID
                       OR (jsonb_typeof(e->'descendants') = 'array'
                           AND e->'descendants' ? (TG_RELID::text)));
      RETURN NULL;
    END`
}

/**
 * Puts the capture triggers named `p_names` of table `p_from` on `p_to`, as they are (events,
 * transition tables, function, ENABLE mode): what `createCapture` made on the source, so a
 * partition created later is captured exactly like the source. A trigger already there is kept.
 */
function copyCapture(): RawBuilder<unknown> {
  return sql`
    DECLARE
      v_trg record;
      v_guard text := current_setting(${OWN}, true);
    BEGIN
      PERFORM set_config(${OWN}, 'on', true);
      FOR v_trg IN
        SELECT t.tgname, t.tgtype, t.tgfoid, t.tgoldtable, t.tgnewtable, t.tgenabled
        FROM pg_trigger t
        WHERE t.tgrelid = p_from AND t.tgname = ANY (p_names)
          AND NOT EXISTS (SELECT 1 FROM pg_trigger x WHERE x.tgrelid = p_to AND x.tgname = t.tgname)
      LOOP
        BEGIN
          EXECUTE format('CREATE TRIGGER %I AFTER %s ON %s%s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
            v_trg.tgname,
            CASE WHEN v_trg.tgtype & 4 <> 0 THEN 'INSERT' WHEN v_trg.tgtype & 8 <> 0 THEN 'DELETE'
                 WHEN v_trg.tgtype & 16 <> 0 THEN 'UPDATE' ELSE 'TRUNCATE' END,
            p_to::regclass,
            CASE WHEN v_trg.tgoldtable IS NULL AND v_trg.tgnewtable IS NULL THEN '' ELSE ' REFERENCING' END
              || CASE WHEN v_trg.tgoldtable IS NULL THEN '' ELSE format(' OLD TABLE AS %I', v_trg.tgoldtable) END
              || CASE WHEN v_trg.tgnewtable IS NULL THEN '' ELSE format(' NEW TABLE AS %I', v_trg.tgnewtable) END,
            v_trg.tgfoid::regproc);
          IF v_trg.tgenabled = 'A' THEN
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', p_to::regclass, v_trg.tgname);
          ELSIF v_trg.tgenabled = 'R' THEN
            EXECUTE format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', p_to::regclass, v_trg.tgname);
          ELSIF v_trg.tgenabled = 'D' THEN
            EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', p_to::regclass, v_trg.tgname);
          END IF;
        EXCEPTION WHEN duplicate_object THEN
          NULL; -- another runner's check put it there first
        END;
      END LOOP;
      PERFORM set_config(${OWN}, coalesce(v_guard, ''), true);
    END`
}

/**
 * Checks the sources of one view (and of its rebuild in progress) against the database, and
 * with `p_repair` acts on what it finds:
 *
 * - source dropped, renamed, replaced (another table has its name), or its capture triggers
 *   gone: the view is marked `needs_rebuild` with a reason that says what happened;
 * - a column the key is read from renamed, dropped or retyped: the capture function is replaced
 *   by one that does nothing (it reads the column by name: every write naming the table would
 *   fail), and the view is marked;
 * - a partition or child that joined the tree gets the capture; the view is marked unless the
 *   table was created just now (`p_created`: empty, no write missed); one that left the tree
 *   (detached, dropped) marks the view, and a detached one loses the capture;
 * - a parent the source joined (`p_altered`, at the DDL itself: no write missed) gets the write
 *   triggers.
 *
 * A problem of the rebuild's sources marks the rebuild stale instead. Returns the reasons found
 * for the live view (read-only, for `status`, without `p_repair`).
 */
function checkSources(s: RawBuilder<unknown>, schema: string): RawBuilder<unknown> {
  return sql`
    DECLARE
      v_view record;
      v_src record;
      v_reasons text[] := '{}';
      v_reason text;
      v_now oid[];
      v_name name;
      v_nsp name;
      v_col jsonb;
      v_type text;
      v_t oid;
      v_n text;
      v_names text[];
      v_needed text[];
      v_missing text[];
      v_fn text;
      v_stop text := 'BEGIN RETURN NULL; END';
      v_guard text := current_setting(${OWN}, true);
    BEGIN
      SELECT v.name, v.id, v.state, v.rebuild_id, v.rebuild_sources INTO v_view
      FROM ${s}.views v WHERE v.name = p_view AND v.kind = 'declarative';
      IF NOT FOUND THEN RETURN v_reasons; END IF;
      FOR v_src IN
        SELECT v_view.id AS cid, vs.position AS pos, vs.source_oid AS oid, vs.source_schema AS nsp,
               vs.source_table AS rel, vs.descendants AS recorded, vs.mapped_columns AS mapped,
               vs.mapping AS mapping, false AS for_rebuild
        FROM ${s}.view_sources vs WHERE vs.view = p_view
        UNION ALL
        SELECT v_view.rebuild_id, (e->>'position')::int, (e->>'oid')::oid, e->>'schema', e->>'table',
               CASE WHEN jsonb_typeof(e->'descendants') = 'array'
                    THEN ARRAY(SELECT d::oid FROM jsonb_array_elements_text(e->'descendants') AS d) END,
               CASE WHEN jsonb_typeof(e->'mappedColumns') = 'array' THEN e->'mappedColumns' END,
               e->>'mapping', true
        FROM jsonb_array_elements(CASE WHEN v_view.rebuild_id IS NULL THEN '[]'::jsonb
                                       ELSE coalesce(v_view.rebuild_sources, '[]'::jsonb) END) AS e
      LOOP
        v_reason := NULL;
        v_names := ARRAY(SELECT ${sql.lit(schema)} || '_' || v_src.cid || '_' || v_src.pos || '_' || ev
                         FROM unnest(ARRAY['insert', 'update', 'delete', 'truncate']) AS ev);
        v_fn := 'capture_' || v_src.cid || '_' || v_src.pos;

        -- The source itself: still there, under its name?
        SELECT c.relname, n.nspname INTO v_name, v_nsp
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = v_src.oid;
        IF NOT FOUND THEN
          v_reason := format('source %I.%I was dropped', v_src.nsp, v_src.rel);
        ELSIF v_name <> v_src.rel OR v_nsp <> v_src.nsp THEN
          v_reason := format('source %I.%I was renamed to %I.%I', v_src.nsp, v_src.rel, v_nsp, v_name);
        END IF;
        IF v_reason IS NOT NULL AND to_regclass(format('%I.%I', v_src.nsp, v_src.rel)) IS NOT NULL THEN
          v_reason := v_reason || format(' and %I.%I is now another table, whose writes were never captured',
                                         v_src.nsp, v_src.rel);
        END IF;

        -- The columns the key is read from, as the capture was made for them.
        IF v_reason IS NULL AND v_src.mapped IS NOT NULL THEN
          FOR v_col IN SELECT * FROM jsonb_array_elements(v_src.mapped) LOOP
            SELECT format_type(a.atttypid, a.atttypmod) INTO v_type FROM pg_attribute a
            WHERE a.attrelid = v_src.oid AND a.attname = v_col->>'name' AND a.attnum > 0 AND NOT a.attisdropped;
            IF NOT FOUND THEN
              v_reason := format('column %I of source %I.%I, which the key is read from, was renamed or dropped; its capture was stopped so that writes to the table go on',
                                 v_col->>'name', v_src.nsp, v_src.rel);
            ELSIF v_type <> v_col->>'type' THEN
              v_reason := format('column %I of source %I.%I, which the key is read from, changed type from %s to %s; its capture was stopped so that writes to the table go on',
                                 v_col->>'name', v_src.nsp, v_src.rel, v_col->>'type', v_type);
            END IF;
            EXIT WHEN v_reason IS NOT NULL;
          END LOOP;
          IF v_reason IS NOT NULL AND p_repair AND EXISTS (
               SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = ${sql.lit(schema)} AND p.proname = v_fn AND p.prosrc <> v_stop) THEN
            PERFORM set_config(${OWN}, 'on', true);
            EXECUTE format('CREATE OR REPLACE FUNCTION %I.%I() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS %L',
                           ${sql.lit(schema)}, v_fn, v_stop);
            PERFORM set_config(${OWN}, coalesce(v_guard, ''), true);
          END IF;
        END IF;

        -- A rebuild without capture of its own (one that shares the view's) has nothing more here.
        CONTINUE WHEN v_reason IS NULL AND v_src.for_rebuild AND NOT EXISTS (
          SELECT 1 FROM pg_trigger WHERE tgrelid = v_src.oid AND tgname = ANY (v_names));
        IF v_reason IS NULL
           AND (SELECT count(*) FROM pg_trigger WHERE tgrelid = v_src.oid AND tgname = ANY (v_names)) < 4 THEN
          v_reason := format('the capture triggers on source %I.%I were dropped', v_src.nsp, v_src.rel);
        END IF;

        IF v_reason IS NULL THEN
          -- Partitions and inheritance children, at every level.
          v_now := ARRAY(
            WITH RECURSIVE d(oid) AS (
              SELECT inhrelid FROM pg_inherits WHERE inhparent = v_src.oid
              UNION SELECT i.inhrelid FROM pg_inherits i JOIN d ON i.inhparent = d.oid)
            SELECT d.oid FROM d ORDER BY d.oid);
          FOR v_t IN SELECT unnest(v_now) EXCEPT SELECT unnest(v_src.recorded) LOOP
            -- Captured already (made by create, or its triggers stayed): no write was missed.
            CONTINUE WHEN (SELECT count(*) FROM pg_trigger WHERE tgrelid = v_t AND tgname = ANY (v_names)) = 4;
            IF p_repair THEN
              BEGIN
                PERFORM ${s}.copy_capture(v_src.oid, v_t, v_names);
              EXCEPTION WHEN insufficient_privilege THEN
                v_reason := format('%s became a partition or child of source %I.%I, and matview''s role may not put its capture triggers on it (grant it TRIGGER on the table, docs/least-privilege.md)',
                                   v_t::regclass, v_src.nsp, v_src.rel);
                CONTINUE;
              END;
            END IF;
            IF v_t IS DISTINCT FROM p_created THEN
              v_reason := format('%s became a partition or child of source %I.%I and its rows were not captured',
                                 v_t::regclass, v_src.nsp, v_src.rel);
            END IF;
          END LOOP;
          FOR v_t IN SELECT unnest(v_src.recorded) EXCEPT SELECT unnest(v_now) LOOP
            IF EXISTS (SELECT 1 FROM pg_class WHERE oid = v_t) THEN
              v_reason := format('%s was detached from source %I.%I (it is no longer a partition or child)',
                                 v_t::regclass, v_src.nsp, v_src.rel);
              IF p_repair THEN
                BEGIN
                  PERFORM set_config(${OWN}, 'on', true);
                  FOR v_n IN SELECT tgname FROM pg_trigger WHERE tgrelid = v_t AND tgname = ANY (v_names) LOOP
                    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v_n, v_t::regclass);
                  END LOOP;
                  PERFORM set_config(${OWN}, coalesce(v_guard, ''), true);
                EXCEPTION WHEN insufficient_privilege THEN
                  NULL; -- not its owner: its writes log keys of no view row, which costs a little
                END;
              END IF;
            ELSE
              v_reason := format('a partition or child of source %I.%I was dropped', v_src.nsp, v_src.rel);
            END IF;
          END LOOP;
          IF p_repair AND v_now IS DISTINCT FROM v_src.recorded THEN
            IF v_src.for_rebuild THEN
              UPDATE ${s}.views v
              SET rebuild_sources = (
                SELECT jsonb_agg(CASE WHEN (x.e->>'position')::int = v_src.pos
                                      THEN jsonb_set(x.e, '{descendants}', to_jsonb(v_now::text[]))
                                      ELSE x.e END ORDER BY x.ord)
                FROM jsonb_array_elements(v.rebuild_sources) WITH ORDINALITY AS x(e, ord))
              WHERE v.name = p_view;
            ELSE
              UPDATE ${s}.view_sources SET descendants = v_now
              WHERE view = p_view AND position = v_src.pos;
            END IF;
          END IF;

          -- Parents: their statements change the source's rows too.
          v_needed := CASE WHEN v_src.mapped IS NOT NULL
                           THEN ARRAY(SELECT x->>'name' FROM jsonb_array_elements(v_src.mapped) AS x)
                           ELSE ARRAY(SELECT attname::text FROM pg_attribute
                                      WHERE attrelid = v_src.oid AND attnum > 0 AND NOT attisdropped) END;
          FOR v_t IN
            WITH RECURSIVE u(oid) AS (
              SELECT inhparent FROM pg_inherits WHERE inhrelid = v_src.oid
              UNION SELECT i.inhparent FROM pg_inherits i JOIN u ON i.inhrelid = u.oid)
            SELECT u.oid FROM u
          LOOP
            CONTINUE WHEN (SELECT count(*) FROM pg_trigger WHERE tgrelid = v_t AND tgname = ANY (v_names[1:3])) = 3;
            v_missing := ARRAY(SELECT unnest(v_needed) EXCEPT
                               SELECT attname::text FROM pg_attribute WHERE attrelid = v_t AND attnum > 0 AND NOT attisdropped);
            IF cardinality(v_missing) > 0 THEN
              v_reason := format('source %I.%I became a child of %s, which lacks its columns %s: writes naming %s cannot be captured',
                                 v_src.nsp, v_src.rel, v_t::regclass, array_to_string(v_missing, ', '), v_t::regclass);
            ELSE
              IF p_repair THEN PERFORM ${s}.copy_capture(v_src.oid, v_t, v_names[1:3]); END IF;
              IF v_t IS DISTINCT FROM p_altered THEN
                v_reason := format('source %I.%I became a partition or child of %s, whose writes were not captured',
                                   v_src.nsp, v_src.rel, v_t::regclass);
              END IF;
            END IF;
          END LOOP;
        END IF;

        IF v_reason IS NOT NULL THEN
          IF NOT v_src.for_rebuild THEN v_reasons := v_reasons || v_reason; END IF;
          IF p_repair AND v_src.for_rebuild THEN
            UPDATE ${s}.views SET rebuild_stale = v_reason || ' during the rebuild', updated_at = now()
            WHERE name = p_view AND rebuild_stale IS DISTINCT FROM v_reason || ' during the rebuild';
          ELSIF p_repair THEN
            -- A rebuild in progress keeps the view (it replaces the table); the reason makes a
            -- failed rebuild fall back to needs_rebuild, as a TRUNCATE does.
            UPDATE ${s}.views
            SET state = CASE WHEN state = 'rebuilding' THEN state ELSE 'needs_rebuild' END,
                state_reason = v_reason, updated_at = now()
            WHERE name = p_view AND state_reason IS DISTINCT FROM v_reason;
          END IF;
        END IF;
      END LOOP;
      RETURN v_reasons;
    END`
}

/** The views whose capture is on one of `oids` (sources and their recorded descendants). */
function viewsOn(s: RawBuilder<unknown>, oids: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    SELECT v.name FROM ${s}.views v
    WHERE EXISTS (SELECT 1 FROM ${s}.view_sources vs
                  WHERE vs.view = v.name AND (vs.source_oid = ANY (${oids}) OR vs.descendants && ${oids}))
       OR (v.rebuild_id IS NOT NULL AND EXISTS (
             SELECT 1 FROM jsonb_array_elements(coalesce(v.rebuild_sources, '[]'::jsonb)) AS e
             WHERE (e->>'oid')::oid = ANY (${oids})
                OR (jsonb_typeof(e->'descendants') = 'array'
                    AND EXISTS (SELECT 1 FROM jsonb_array_elements_text(e->'descendants') AS d
                                WHERE d::oid = ANY (${oids})))))`
}

/**
 * `ddl_command_end` of CREATE TABLE and ALTER TABLE: checks the views whose capture is on the
 * table, on one of its parents (a partition created or attached) or on one of its descendants
 * (a source attached under a new parent). A table no view reads costs two index lookups.
 */
function watchDdl(s: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    DECLARE
      v_cmd record;
      v_view record;
      v_near oid[];
    BEGIN
      IF current_setting(${OWN}, true) = 'on' THEN RETURN; END IF;
      FOR v_cmd IN
        SELECT DISTINCT c.objid, c.command_tag FROM pg_event_trigger_ddl_commands() c
        WHERE c.classid = 'pg_catalog.pg_class'::regclass AND c.object_type IN ('table', 'table column')
      LOOP
        v_near := ARRAY(
          WITH RECURSIVE up(oid) AS (
            SELECT v_cmd.objid UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid),
          down(oid) AS (
            SELECT v_cmd.objid UNION SELECT i.inhrelid FROM pg_inherits i JOIN down ON i.inhparent = down.oid)
          SELECT oid FROM up UNION SELECT oid FROM down);
        FOR v_view IN ${viewsOn(s, sql`v_near`)} LOOP
          BEGIN
            PERFORM ${s}.check_sources(v_view.name,
              CASE WHEN v_cmd.command_tag = 'CREATE TABLE' THEN v_cmd.objid END, v_cmd.objid, true);
          EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'matview: checking view % after % failed: % (its next run checks again)',
              v_view.name, v_cmd.command_tag, SQLERRM;
          END;
        END LOOP;
      END LOOP;
    EXCEPTION WHEN OTHERS THEN
      -- Never the application's DDL's failure: the next run's check sees what this one missed.
      RAISE WARNING 'matview: its schema watch failed: % (the next run checks the views again)', SQLERRM;
    END`
}

/** `sql_drop`: checks the views whose capture was on a dropped table. */
function watchDrop(s: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    DECLARE
      v_view record;
      v_gone oid[];
    BEGIN
      IF current_setting(${OWN}, true) = 'on' THEN RETURN; END IF;
      v_gone := ARRAY(SELECT d.objid FROM pg_event_trigger_dropped_objects() d
                      WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.object_type = 'table');
      IF cardinality(v_gone) = 0 THEN RETURN; END IF;
      FOR v_view IN ${viewsOn(s, sql`v_gone`)} LOOP
        BEGIN
          PERFORM ${s}.check_sources(v_view.name, NULL, NULL, true);
        EXCEPTION WHEN OTHERS THEN
          RAISE WARNING 'matview: checking view % after a DROP failed: % (its next run checks again)',
            v_view.name, SQLERRM;
        END;
      END LOOP;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'matview: its schema watch failed: % (the next run checks the views again)', SQLERRM;
    END`
}
