import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { CATALOG_VERSION } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { CATALOG_FUNCTIONS, CATALOG_TABLES } from '../support/catalog.js'
import { runCli, writeConfig } from '../support/cli.js'
import { type CliDatabase, cliDatabase, useCliDatabase } from '../support/cli-database.js'
import { available, DIALECTS, POSTGRES_ADMIN_URL } from '../support/dialects.js'

// The bad-input catalogue (docs/bad-input.md) as a user meets it: the built bin, a config file,
// and the database looked at afterwards. Each answer is one line, a non-zero exit, and nothing
// half-made. Cases already covered elsewhere are linked from the doc, not repeated here.

/** A correct declarative view over `customers`, as config-file source text. */
const GOOD_VIEW = `defineView({ name: 'good', key: ['id'], query: sql\`SELECT id, name FROM customers\`,
  sources: { customers: { id: 'id' } } })`

describe('bad config and command-line input', () => {
  // Refused before any connection: the embedded database directory is never even created.
  const cases: Array<{
    input: string
    config: string
    args?: string[]
    answer: RegExp
    /** Checked after connecting (the catalog is made on first use, as by any command). */
    connects?: true
  }> = [
    {
      input: 'a malformed config file',
      config: 'export default { views: [',
      answer:
        /^matview: config \S+matview\.config\.mjs could not be loaded: .*Unexpected token at \S+matview\.config\.mjs:\d+:\d+; fix the file$/,
    },
    {
      input: 'a config file that throws',
      config: "throw new Error('DATABASE_URL is not set')",
      answer:
        /^matview: config \S+matview\.config\.mjs could not be loaded: DATABASE_URL is not set; fix the file$/,
    },
    {
      input: 'a wrong type (batchSize a string)',
      config: "export default { database: 'pglite:db', batchSize: 'ten' }",
      answer: /^matview: config \S+: batchSize: must be a number$/,
    },
    {
      input: 'a wrong type inside a view (key a string)',
      config: `export default { database: 'pglite:db', views: [defineView({ name: 'v', key: 'id',
        query: sql\`SELECT id FROM customers\`, sources: { customers: { id: 'id' } } })] }`,
      answer: /^matview: config \S+: views\.0\.key: must be a list of column names$/,
    },
    {
      input: 'a wrong type inside a view (a source column a number)',
      config: `export default { database: 'pglite:db', views: [defineView({ name: 'v', key: ['id'],
        query: sql\`SELECT id FROM customers\`, sources: { customers: { id: 7 } } })] }`,
      answer:
        /^matview: config \S+: views\.0\.sources\.customers\.id: must be a column name of the source$/,
    },
    {
      input: 'a wrong type (database a number)',
      config: 'export default { database: 42 }',
      answer:
        /^matview: config \S+: database: must be a URL \(postgres:\/\/…, pglite:memory, pglite:PATH\) or a Kysely instance$/,
    },
    {
      input: 'a database that is not a URL',
      config: "export default { database: 'mysql://localhost/app' }",
      answer:
        /^matview: database: "mysql:\/\/localhost\/app" is not a database URL; use postgres:\/\/user@host:port\/db, pglite:memory or pglite:PATH$/,
    },
    {
      input: 'a misspelt field',
      config: "export default { database: 'pglite:db', batchsize: 10 }",
      answer:
        /^matview: config \S+: unknown field "batchsize" \(did you mean batchSize\?\); known fields: database, schema, batchSize, strategy, rebuildShare, keepRuns, views$/,
    },
    {
      input: 'two views with one name',
      config: `const v = ${GOOD_VIEW}\nexport default { database: 'pglite:db', views: [v, v] }`,
      answer: /^matview: config \S+: views: two views are named "good"; view names must be unique$/,
    },
    {
      input: 'an unknown view',
      config: `export default { database: 'pglite:db', views: [${GOOD_VIEW}] }`,
      args: ['update', '--views', 'goood'],
      answer: /^matview: unknown view "goood"; known views: good$/,
    },
    {
      input: 'a huge batch size in the config',
      config: "export default { database: 'pglite:db', batchSize: 10000000 }",
      answer: /^matview: config \S+: batchSize: must be at most 1000000$/,
    },
    {
      input: 'a huge batch size on the command line',
      config: "export default { database: 'pglite:db' }",
      args: ['update', '--batch-size', '1000001'],
      answer: /--batch-size must be at most 1000000, got 1000001$/,
    },
    {
      input: 'a zero batch size in the config',
      config: "export default { database: 'pglite:db', batchSize: 0 }",
      answer: /^matview: config \S+: batchSize: must be at least 1$/,
    },
    {
      input: 'a fractional batch size in the config',
      config: "export default { database: 'pglite:db', batchSize: 2.5 }",
      answer: /^matview: config \S+: batchSize: must be a whole number$/,
    },
    {
      input: 'a zero batch size on the command line',
      config: "export default { database: 'pglite:db' }",
      args: ['create', '--batch-size', '0'],
      answer: /--batch-size must be at least 1, got 0$/,
    },
    {
      input: 'a negative batch size on the command line',
      config: "export default { database: 'pglite:db' }",
      args: ['update', '--batch-size', '-5'],
      answer: /--batch-size must be at least 1, got -5$/,
    },
    {
      input: 'a time budget of zero',
      config: "export default { database: 'pglite:db' }",
      args: ['update', '--max-time', '0'],
      answer: /--max-time must be more than 0; leave it out for no limit$/,
    },
    {
      input: 'a time budget of 0s for a rebuild',
      config: "export default { database: 'pglite:db' }",
      args: ['rebuild', '--all-changed', '--max-time', '0s'],
      answer: /--max-time must be more than 0; leave it out for no limit$/,
    },
    {
      input: 'a negative time budget',
      config: "export default { database: 'pglite:db' }",
      args: ['update', '--max-time', '-1s'],
      answer: /--max-time must be a duration such as 30s, 5m or 1h, got "-1s"$/,
    },
  ]

  for (const bad of cases) {
    it(`answers ${bad.input} with one line and exit 2, and touches no database`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'matview-proof-'))
      writeConfig(dir, bad.config)
      const result = await runCli(bad.args ?? ['update'], dir)
      expect(result.code, result.stderr).toBe(2)
      expect(result.stdout).toBe('')
      // commander adds a usage hint on a line of its own after a bad flag; the answer is line 1.
      const [line, ...rest] = result.stderr.trim().split('\n')
      expect(line).toMatch(bad.answer)
      expect(rest.filter((l) => l !== '(run with --help for usage)')).toEqual([])
      expect(existsSync(join(dir, 'db'))).toBe(bad.connects === true)
    })
  }
})

/** Tables, matview's objects and catalog rows that exist, to compare before and after. */
async function snapshot(db: Kysely<any>) {
  const { rows: relations } = await sql<{ name: string }>`
    SELECT n.nspname || '.' || c.relname AS name FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1`.execute(db)
  const { rows: triggers } = await sql<{ name: string }>`
    SELECT tgname || ' on ' || tgrelid::regclass::text AS name FROM pg_catalog.pg_trigger
    WHERE NOT tgisinternal ORDER BY 1`.execute(db)
  const { rows: functions } = await sql<{ name: string }>`
    SELECT n.nspname || '.' || p.proname AS name FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`.execute(db)
  const hasCatalog = relations.some((r) => r.name === 'matview.views')
  const views = hasCatalog
    ? (
        await sql<{ name: string; state: string }>`
          SELECT name, state FROM matview.views ORDER BY name`.execute(db)
      ).rows
    : []
  return {
    relations: relations.map((r) => r.name),
    triggers: triggers.map((t) => t.name),
    functions: functions.map((f) => f.name),
    views,
  }
}

async function createTables(db: Kysely<any>): Promise<void> {
  await sql`CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, region text)`.execute(
    db,
  )
  await sql`CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
    amount_cents bigint NOT NULL)`.execute(db)
  await sql`INSERT INTO customers VALUES (1, 'Ada', 'north'), (2, 'Bob', 'north'), (3, 'Cy', NULL)`.execute(
    db,
  )
  await sql`INSERT INTO orders (customer_id, amount_cents)
    SELECT 1 + g % 3, 10 * g FROM generate_series(1, 30) AS g`.execute(db)
}

describe.each(DIALECTS)('bad view definitions and databases through the CLI on %s', (dialect) => {
  const database = useCliDatabase(dialect, (database) => database.use(createTables))

  const views = (...definitions: string[]) =>
    writeConfig(
      database!.dir,
      `export default { database: ${JSON.stringify(database!.spec)}, views: [${definitions.join(', ')}] }`,
    )

  it('fails each broken view with one line naming it, exit 1, leaves none of it, and still creates the good one', async () => {
    const broken: Record<string, { definition: string; answer: RegExp }> = {
      syntax: {
        definition: `defineView({ name: 'syntax', key: ['id'], query: sql\`SELEC id FROM customers\`,
          sources: { customers: { id: 'id' } } })`,
        answer: /the query fails: syntax error at or near "SELEC"$/,
      },
      missing_table: {
        definition: `defineView({ name: 'missing_table', key: ['id'], query: sql\`SELECT id FROM custmers\`,
          sources: { custmers: { id: 'id' } } })`,
        answer: /source table "custmers" does not exist; create it first or fix the name$/,
      },
      missing_column: {
        definition: `defineView({ name: 'missing_column', key: ['id'], query: sql\`SELECT id, nmae FROM customers\`,
          sources: { customers: { id: 'id' } } })`,
        answer: /the query fails: column "nmae" does not exist$/,
      },
      not_unique: {
        definition: `defineView({ name: 'not_unique', key: ['customer_id'],
          query: sql\`SELECT customer_id, amount_cents FROM orders\`,
          sources: { orders: { customer_id: 'customer_id' } } })`,
        answer:
          /the query returns more than one row for key \(customer_id\)=\(\d\); a view's key must identify one row: fix the key or the query; nothing of the view was kept$/,
      },
      null_key: {
        definition: `defineView({ name: 'null_key', key: ['region'],
          query: sql\`SELECT region, count(*) AS n FROM customers GROUP BY region\`,
          sources: { customers: { region: 'region' } } })`,
        answer:
          /key column "region" is NULL; a key must never be NULL \(filter such rows out or coalesce them\)$/,
      },
      not_read: {
        definition: `defineView({ name: 'not_read', key: ['id'], query: sql\`SELECT id FROM customers\`,
          sources: { customers: { id: 'id' }, orders: { id: 'customer_id' } } })`,
        answer: /source "orders" is not read by the query; remove it from sources$/,
      },
    }
    views(GOOD_VIEW, ...Object.values(broken).map((b) => b.definition))
    const before = await database!.use(snapshot)
    const result = await runCli(['update'], database!.dir)
    expect(result.code, result.stdout + result.stderr).toBe(1)
    const lines = result.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^good: done \(created, backfilled\), \+3 ~0 -0/)
    for (const [name, bad] of Object.entries(broken)) {
      const line = lines.find((l) => l.startsWith(`${name}: failed`))
      expect(line, name).toBeDefined()
      expect(line).toContain(`: view "${name}": `)
      expect(line).toMatch(bad.answer)
    }
    expect(lines.at(-1)).toMatch(/^7 views in .*: 1 done, 6 failed$/)

    // Nothing of the broken views: only the good one's target, log, capture and catalog row.
    const after = await database!.use(snapshot)
    const { rows: ids } = await database!.use((db) =>
      sql<{ id: number }>`SELECT id FROM matview.views WHERE name = 'good'`.execute(db),
    )
    const id = ids[0]!.id
    expect(after.views).toEqual([{ name: 'good', state: 'ready' }])
    expect(after.relations.filter((r) => !before.relations.includes(r)).sort()).toEqual(
      [
        ...CATALOG_TABLES.map((t) => `matview.${t}`),
        `matview.log_${id}`,
        `matview.inbox_${id}`,
        'public.good',
      ].sort(),
    )
    expect(after.triggers).toHaveLength(4)
    expect(after.triggers.every((t) => t.endsWith(' on customers'))).toBe(true)
    expect(after.functions.sort()).toEqual(
      [`matview.capture_${id}_0`, ...CATALOG_FUNCTIONS.map((f) => `matview.${f}`)].sort(),
    )
    await database!.use(async (db) =>
      expect(
        await queryDifferences(db, 'good', sql`SELECT id, name FROM customers`, ['id', 'name']),
      ).toEqual({ extra: [], missing: [] }),
    )
  })

  it('refuses views that read each other in a cycle with one line and exit 2, creating neither', async () => {
    views(
      `defineView({ name: 'va', key: ['id'], query: sql\`SELECT id FROM vb\`, sources: { vb: { id: 'id' } } })`,
      `defineView({ name: 'vb', key: ['id'], query: sql\`SELECT id FROM va\`, sources: { va: { id: 'id' } } })`,
      GOOD_VIEW,
    )
    const before = await database!.use(snapshot)
    const result = await runCli(['update'], database!.dir)
    expect(result.code).toBe(2)
    expect(result.stderr.trim()).toMatch(
      /^matview: view "v[ab]": views depend on each other in a cycle: v[ab] -> v[ab] -> v[ab]$/,
    )
    const after = await database!.use(snapshot)
    expect(after.views).toEqual([])
    expect(after.triggers).toEqual(before.triggers)
    expect(after.relations.filter((r) => r.startsWith('public.'))).toEqual(
      before.relations.filter((r) => r.startsWith('public.')),
    )
  })

  it('refuses a catalog from a newer matview with one line and exit 2, and changes nothing', async () => {
    views(GOOD_VIEW)
    const status = await runCli(['status'], database!.dir)
    expect(status.code, status.stderr).toBe(0)
    await database!.use((db) =>
      sql`INSERT INTO matview.catalog_version (version, description)
          VALUES (${CATALOG_VERSION + 1}, 'from the future')`.execute(db),
    )
    const before = await database!.use(snapshot)
    for (const command of ['update', 'status', 'rebuild']) {
      const args = command === 'rebuild' ? ['rebuild', 'good'] : [command]
      const result = await runCli(args, database!.dir)
      expect(result.code, command).toBe(2)
      expect(result.stderr.trim()).toBe(
        `matview: the catalog in schema "matview" is at version ${CATALOG_VERSION + 1}, newer than this matview supports (${CATALOG_VERSION}); upgrade matview`,
      )
    }
    expect(await database!.use(snapshot)).toEqual(before)
  })

  it('takes the largest batch size allowed, 1,000,000, and the view equals its query', async () => {
    views(GOOD_VIEW)
    const result = await runCli(['update', '--batch-size', '1000000'], database!.dir)
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toMatch(/^good: done \(created, backfilled\), \+3 ~0 -0 in 1 batch/)
    await database!.use(async (db) => {
      await sql`UPDATE customers SET name = name || '!'`.execute(db)
    })
    const again = await runCli(['update'], database!.dir)
    expect(again.stdout).toMatch(/^good: done, \+0 ~3 -0/)
    await database!.use(async (db) =>
      expect(
        await queryDifferences(db, 'good', sql`SELECT id, name FROM customers`, ['id', 'name']),
      ).toEqual({ extra: [], missing: [] }),
    )
  })
})

// Roles are cluster-wide and PGlite has one user: PostgreSQL only.
describe('a database role without permission to create triggers (PostgreSQL)', () => {
  let database: CliDatabase | undefined
  const role = `matview_proof_${Math.random().toString(36).slice(2, 10)}`
  afterEach(async () => {
    if (database) await database.use((db) => sql`DROP OWNED BY ${sql.id(role)}`.execute(db))
    await database?.close()
    database = undefined
    const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL })
    await admin.connect()
    await admin.query(`DROP ROLE IF EXISTS ${role}`)
    await admin.end()
  })

  it('fails the view with one line that says which rights are missing, exit 1, nothing created', async ({
    skip,
  }) => {
    if (!(await available('postgres'))) skip()
    database = await cliDatabase('postgres')
    await database.use(async (db) => {
      await createTables(db)
      // May create the catalog and targets, and read the sources, but not put triggers on them.
      await sql`CREATE ROLE ${sql.id(role)} LOGIN`.execute(db)
      await sql`GRANT CREATE ON DATABASE ${sql.id(new URL(database!.spec).pathname.slice(1))} TO ${sql.id(role)}`.execute(
        db,
      )
      await sql`GRANT USAGE, CREATE ON SCHEMA public TO ${sql.id(role)}`.execute(db)
      await sql`GRANT SELECT ON customers, orders TO ${sql.id(role)}`.execute(db)
    })
    const url = new URL(database.spec)
    url.username = role
    writeConfig(
      database.dir,
      `export default { database: ${JSON.stringify(url.toString())}, views: [${GOOD_VIEW}] }`,
    )
    const result = await runCli(['update'], database.dir)
    expect(result.code).toBe(1)
    expect(result.stdout.split('\n')[0]).toMatch(
      /^good: failed, .*view "good": creating the view failed: permission denied for table customers; matview's role must own each source table or hold TRIGGER and SELECT on it, and hold CREATE on the target's schema \(docs\/least-privilege\.md\)$/,
    )
    const after = await database.use(snapshot)
    expect(after.views).toEqual([])
    expect(after.triggers).toEqual([])
    expect(after.relations.filter((r) => r.startsWith('public.'))).toEqual([
      'public.customers',
      'public.orders',
    ])
  })
})
