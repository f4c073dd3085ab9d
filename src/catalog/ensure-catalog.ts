import { type Kysely, type RawBuilder, sql } from 'kysely'
import { CatalogVersionError } from '../errors/matview-error.js'
import { CATALOG_VERSION, MIGRATIONS, type Migration } from './migrations.js'

/** The schema and its version table: what every migration's transaction starts from. */
export async function createCatalogSchema(db: Kysely<any>, schema: string): Promise<void> {
  await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(schema)}`.execute(db)
  await sql`
    CREATE TABLE IF NOT EXISTS ${sql.id(schema)}.catalog_version (
      version integer PRIMARY KEY,
      description text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`.execute(db)
}

/** Records an applied migration; `value` writes its values (parameters, or literals to print). */
export function migrationRecord(
  schema: string,
  migration: Migration,
  value: (v: unknown) => RawBuilder<unknown> = (v) => sql`${v}`,
): RawBuilder<unknown> {
  return sql`
    INSERT INTO ${sql.id(schema)}.catalog_version (version, description)
    VALUES (${value(migration.version)}, ${value(migration.description)})`
}

/** The catalog's version in the database, or 0 when there is none yet. */
export async function readCatalogVersion(db: Kysely<any>, schema: string): Promise<number> {
  const { rows } = await sql<{ exists: boolean }>`
    SELECT to_regclass(quote_ident(${schema}) || '.catalog_version') IS NOT NULL AS exists
  `.execute(db)
  if (!rows[0]?.exists) return 0
  const version = await sql<{ version: number | null }>`
    SELECT max(version) AS version FROM ${sql.id(schema)}.catalog_version
  `.execute(db)
  return Number(version.rows[0]?.version ?? 0)
}

/**
 * Creates the catalog on first use and upgrades it in place. Each migration runs in a
 * transaction holding a transaction-level advisory lock, so two processes starting at once
 * apply it once: the second waits, then sees the new version and does nothing. A catalog newer
 * than this code is refused, never downgraded.
 */
export async function ensureCatalog(db: Kysely<any>, schema: string): Promise<void> {
  const found = await readCatalogVersion(db, schema)
  if (found > CATALOG_VERSION) throw new CatalogVersionError(schema, found, CATALOG_VERSION)
  if (found === CATALOG_VERSION) return
  await db.transaction().execute(async (trx) => {
    await sql`SET LOCAL lock_timeout = '60s'`.execute(trx)
    await sql`SELECT pg_advisory_xact_lock(hashtext(${schema}), hashtext('matview:migrate'))`.execute(
      trx,
    )
    await createCatalogSchema(trx, schema)
  })
  for (const migration of MIGRATIONS) {
    await db.transaction().execute(async (trx) => {
      await sql`SET LOCAL lock_timeout = '60s'`.execute(trx)
      await sql`SELECT pg_advisory_xact_lock(hashtext(${schema}), hashtext('matview:migrate'))`.execute(
        trx,
      )
      const current = await readCatalogVersion(trx, schema)
      if (current > CATALOG_VERSION) throw new CatalogVersionError(schema, current, CATALOG_VERSION)
      if (current >= migration.version) return
      await migration.up(trx, schema)
      await migrationRecord(schema, migration).execute(trx)
    })
  }
}
