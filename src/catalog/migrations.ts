import { type Kysely, sql } from 'kysely'
import { invokeQueryCaptures } from '../engine/capture-ddl.js'
import { installSchemaWatch } from './schema-watch.js'

/**
 * The catalog's numbered migrations. A fresh database runs them all; an older catalog runs the
 * ones it lacks, each in its own transaction under the migration lock (`ensure-catalog.ts`).
 * Never edit a released migration: add the next number.
 */
export interface Migration {
  version: number
  description: string
  up(trx: Kysely<any>, schema: string): Promise<void>
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'views, run history',
    async up(trx, schema) {
      const s = sql.id(schema)
      await sql`
        CREATE TABLE ${s}.views (
          name text PRIMARY KEY,
          -- short, stable id for naming the view's own objects (change log, triggers)
          id serial UNIQUE,
          kind text NOT NULL CHECK (kind IN ('handwritten', 'declarative')),
          definition_hash text,
          -- building | ready | needs_rebuild | rebuilding
          state text NOT NULL DEFAULT 'ready',
          state_reason text,
          -- where an interrupted backfill resumes (the last key copied)
          backfill_checkpoint jsonb,
          created_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now()
        )`.execute(trx)
      await sql`
        CREATE TABLE ${s}.runs (
          id bigserial PRIMARY KEY,
          view text NOT NULL,
          started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
          finished_at timestamptz,
          -- running | done | partial | failed | interrupted
          outcome text NOT NULL DEFAULT 'running',
          rows_inserted bigint NOT NULL DEFAULT 0,
          rows_updated bigint NOT NULL DEFAULT 0,
          rows_deleted bigint NOT NULL DEFAULT 0,
          batches integer NOT NULL DEFAULT 0,
          error text,
          host text,
          pid integer
        )`.execute(trx)
      await sql`CREATE INDEX runs_view_started_idx ON ${s}.runs (view, started_at DESC)`.execute(
        trx,
      )
    },
  },
  {
    version: 2,
    description: 'declarative views: targets, sources, truncate marker',
    async up(trx, schema) {
      const s = sql.id(schema)
      await sql`
        ALTER TABLE ${s}.views
          ADD COLUMN target_schema text,
          ADD COLUMN target_table text,
          -- the key and all target columns, in order, as created (names, not SQL)
          ADD COLUMN key_columns jsonb,
          ADD COLUMN columns jsonb`.execute(trx)
      await sql`
        CREATE TABLE ${s}.view_sources (
          view text NOT NULL REFERENCES ${s}.views (name) ON DELETE CASCADE,
          position integer NOT NULL,
          source_oid oid NOT NULL,
          source_schema text NOT NULL,
          source_table text NOT NULL,
          -- 'columns': triggers log keys; 'query': triggers stage rows, mapped at claim time
          mapping text NOT NULL CHECK (mapping IN ('columns', 'query')),
          PRIMARY KEY (view, position)
        )`.execute(trx)
      await sql`CREATE INDEX view_sources_oid_idx ON ${s}.view_sources (source_oid)`.execute(trx)
      // One function for every TRUNCATE trigger: it finds the views by the truncated table's
      // oid, so no view name is ever written into trigger DDL.
      const body = sql`
        BEGIN
          UPDATE ${s}.views v
          SET state = 'needs_rebuild',
              state_reason = format('source %I.%I was truncated', TG_TABLE_SCHEMA, TG_TABLE_NAME),
              updated_at = now()
          FROM ${s}.view_sources vs
          WHERE vs.view = v.name AND vs.source_oid = TG_RELID;
          RETURN NULL;
        END`
      const text = body.compile(trx).sql
      await sql`
        CREATE FUNCTION ${s}.mark_truncated() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(text)}`.execute(trx)
    },
  },
  {
    version: 3,
    description: 'rebuild: the shadow target and its sources, truncate marker that knows rebuilds',
    async up(trx, schema) {
      const s = sql.id(schema)
      // The rebuild in progress, if any. Its objects (shadow target, change log, triggers) are
      // named by `rebuild_id`, a second id from the same sequence as `id`: the swap makes it the
      // view's id. The columns above keep describing the live target, which serves the old rows
      // until the swap. (Columns, not a table: the catalog's set of tables is part of its shape.)
      await sql`
        ALTER TABLE ${s}.views
          ADD COLUMN rebuild_id integer UNIQUE,
          -- the shadow target, in target_schema
          ADD COLUMN rebuild_table text,
          ADD COLUMN rebuild_hash text,
          ADD COLUMN rebuild_key_columns jsonb,
          ADD COLUMN rebuild_columns jsonb,
          -- the new definition's sources, as view_sources rows: [{position, oid, schema, table, mapping}]
          ADD COLUMN rebuild_sources jsonb,
          -- where the shadow's backfill resumes; {"method": "done"} once it is full
          ADD COLUMN rebuild_checkpoint jsonb,
          -- why the shadow can no longer be swapped in (a source truncated meanwhile)
          ADD COLUMN rebuild_stale text,
          ADD COLUMN rebuild_started_at timestamptz`.execute(trx)
      // A TRUNCATE during a rebuild: of a source the live target was computed from, it keeps
      // the state `rebuilding` (the rebuild replaces that target) but records the reason, so a
      // rebuild that fails falls back to `needs_rebuild`; of a source of the rebuild, it marks
      // the shadow stale, so it is never swapped in.
      const body = sql`
        BEGIN
          UPDATE ${s}.views v
          SET state = CASE WHEN v.state = 'rebuilding' THEN v.state ELSE 'needs_rebuild' END,
              state_reason = format('source %I.%I was truncated', TG_TABLE_SCHEMA, TG_TABLE_NAME),
              updated_at = now()
          FROM ${s}.view_sources vs
          WHERE vs.view = v.name AND vs.source_oid = TG_RELID;
          UPDATE ${s}.views v
          SET rebuild_stale = format('source %I.%I was truncated during the rebuild',
                                     TG_TABLE_SCHEMA, TG_TABLE_NAME),
              updated_at = now()
          WHERE v.rebuild_id IS NOT NULL
            AND EXISTS (SELECT 1 FROM jsonb_array_elements(v.rebuild_sources) AS e
                        WHERE (e->>'oid')::oid = TG_RELID);
          RETURN NULL;
        END`
      const text = body.compile(trx).sql
      await sql`
        CREATE OR REPLACE FUNCTION ${s}.mark_truncated() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS ${sql.lit(text)}`.execute(trx)
    },
  },
  {
    version: 4,
    description: 'index the runs still marked running',
    async up(trx, schema) {
      // Every run starts by closing its view's runs left `running` by a killed process; without
      // this index that scans the whole history (14-28 ms after 100,000 runs, bench/RESULTS.md).
      await sql`
        CREATE INDEX runs_running_idx ON ${sql.id(schema)}.runs (view) WHERE outcome = 'running'
      `.execute(trx)
    },
  },
  {
    version: 5,
    description: 'workers: who runs, where, since when, doing what; keys set aside',
    async up(trx, schema) {
      // One row per running `matview worker`, kept by its heartbeat; a row whose heartbeat
      // stopped is a worker that died without deregistering (kill -9, lost machine).
      await sql`
        CREATE TABLE ${sql.id(schema)}.workers (
          id bigserial PRIMARY KEY,
          host text NOT NULL,
          pid integer NOT NULL,
          started_at timestamptz NOT NULL DEFAULT now(),
          heartbeat_at timestamptz NOT NULL DEFAULT now(),
          -- the views it is running now, comma-separated, or null when idle
          doing text
        )`.execute(trx)
      // Keys whose recompute kept failing, taken out of the change log so the rest of the
      // view proceeds (src/engine/set-aside.ts); `matview retry` puts them back.
      await sql`
        CREATE TABLE ${sql.id(schema)}.set_aside (
          view text NOT NULL,
          -- the key as {"column": "value as text"}
          key jsonb NOT NULL,
          error text NOT NULL,
          set_aside_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (view, key)
        )`.execute(trx)
    },
  },
  {
    version: 6,
    description: 'partitioned change logs: partition counts, the partitions each run applied',
    async up(trx, schema) {
      const s = sql.id(schema)
      // How many hash partitions the view's change log has (1: a plain table), and the
      // rebuild's, which the swap makes the view's.
      await sql`
        ALTER TABLE ${s}.views
          ADD COLUMN partitions integer NOT NULL DEFAULT 1,
          ADD COLUMN rebuild_partitions integer`.execute(trx)
      // One row per stretch of batches a run applied to one partition under its lock, with the
      // database's clock at both ends: no two rows of a partition may overlap (checked by tests).
      await sql`
        CREATE TABLE ${s}.run_partitions (
          run_id bigint NOT NULL REFERENCES ${s}.runs (id) ON DELETE CASCADE,
          partition integer NOT NULL,
          started_at timestamptz NOT NULL,
          finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
          batches integer NOT NULL
        )`.execute(trx)
      // Pruning runs deletes their rows here through the foreign key: one probe per run.
      await sql`CREATE INDEX run_partitions_run_idx ON ${s}.run_partitions (run_id)`.execute(trx)
    },
  },
  {
    version: 7,
    description:
      'schema watch: descendants and mapped columns of sources, check_sources, event triggers',
    async up(trx, schema) {
      // A source replaced, renamed or altered, a partition attached, detached or dropped:
      // see schema-watch.ts. Event triggers only where the role may create them (superuser).
      await installSchemaWatch(trx, schema)
    },
  },
  {
    version: 8,
    description:
      'query-mapped capture runs as the writer (SECURITY INVOKER); stages take INSERT from everyone',
    async up(trx, schema) {
      // Capture functions of views created before ran to_jsonb over the application's types
      // with matview's rights: a cast to json the application may create ran as matview.
      await invokeQueryCaptures(trx, schema)
    },
  },
]

/** The newest catalog version this code knows. */
export const CATALOG_VERSION = MIGRATIONS.at(-1)!.version
