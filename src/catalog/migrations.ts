import { type Kysely, sql } from 'kysely'

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
]

/** The newest catalog version this code knows. */
export const CATALOG_VERSION = MIGRATIONS.at(-1)!.version
