import type { RawBuilder } from 'kysely'
import { describe, expect, it } from 'vitest'
import {
  type DeclarativeView,
  defineView,
  type Kysely,
  Matview,
  sql,
  ViewDefinitionError,
} from '../../src/index.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// Hostile names everywhere a user can put one: the view, its schema, the sources, their
// columns, the key (two columns), and key values. Each name is written exactly once, here, and
// reaches SQL only through sql.id; values only as parameters. The canary table x must survive.

const DROP = '; DROP TABLE x; --'
const VIEW = `Tötals "V" 'q' ☃"${DROP}`
const SCHEMA = `Rëports "R" '${DROP}`
const REGION_VIEW = `${SCHEMA}.Per Rëgion 'r' "${DROP}`
const CUSTOMERS = `Cüstomers "A" 'b'${DROP}`
const ORDERS = `Ørders "O"; --`
const LINES = `Line 'Items'`

// Source columns.
const C_ID = 'id "C"'
const C_REGION = 'Rëgion'
const C_NAME = "Näme'; --"
const O_ID = 'Örder Id'
const O_CUSTOMER = "Cust'Id"
const O_AMOUNT = 'Ämount "€"'
const L_ID = 'Line Id'
const L_ORDER = 'Örder Id'
const L_QTY = 'Qty "n"'

// View columns; the key is (K_REGION, K_CUSTOMER).
const K_REGION = 'Région "R"'
const K_CUSTOMER = "Cust'Id"
const V_ORDERS = 'Örder "Count"'
const V_TOTAL = "Tötal 'cents'"
const V_QTY = 'Qty; --'

/** Key values with quotes, brackets, a backslash, a comma, SQL and unicode. */
const REGIONS = ["north'", '"south"', `east'); DROP TABLE x; --`, 'back\\slash', 'ünï ☃', 'a,b {c}']

const id = (...parts: string[]) => sql.id(...parts)

const totalsQuery = sql`
  SELECT c.${id(C_REGION)} AS ${id(K_REGION)}, c.${id(C_ID)} AS ${id(K_CUSTOMER)},
         c.${id(C_NAME)} AS ${id(C_NAME)},
         (SELECT count(*) FROM ${id(ORDERS)} AS o WHERE o.${id(O_CUSTOMER)} = c.${id(C_ID)})
           AS ${id(V_ORDERS)},
         (SELECT coalesce(sum(o.${id(O_AMOUNT)}), 0) FROM ${id(ORDERS)} AS o
          WHERE o.${id(O_CUSTOMER)} = c.${id(C_ID)}) AS ${id(V_TOTAL)},
         (SELECT coalesce(sum(l.${id(L_QTY)}), 0)
          FROM ${id(LINES)} AS l JOIN ${id(ORDERS)} AS o ON o.${id(O_ID)} = l.${id(L_ORDER)}
          WHERE o.${id(O_CUSTOMER)} = c.${id(C_ID)}) AS ${id(V_QTY)}
  FROM ${id(CUSTOMERS)} AS c`

const totals = defineView({
  name: VIEW,
  key: [K_REGION, K_CUSTOMER],
  query: totalsQuery,
  sources: {
    [CUSTOMERS]: { [K_REGION]: C_REGION, [K_CUSTOMER]: C_ID },
    // Orders do not hold the region: a SQL mapping over the changed rows finds it.
    [ORDERS]: sql`
      SELECT c.${id(C_REGION)} AS ${id(K_REGION)}, c.${id(C_ID)} AS ${id(K_CUSTOMER)}
      FROM changed AS ch JOIN ${id(CUSTOMERS)} AS c ON c.${id(C_ID)} = ch.${id(O_CUSTOMER)}`,
    [LINES]: sql`
      SELECT c.${id(C_REGION)} AS ${id(K_REGION)}, c.${id(C_ID)} AS ${id(K_CUSTOMER)}
      FROM changed AS ch
      JOIN ${id(ORDERS)} AS o ON o.${id(O_ID)} = ch.${id(L_ORDER)}
      JOIN ${id(CUSTOMERS)} AS c ON c.${id(C_ID)} = o.${id(O_CUSTOMER)}`,
  },
  indexes: [[V_TOTAL], [C_NAME, K_REGION]],
})

/** A view on the first one's target, in a schema with a hostile name. */
const regionQuery = sql`
  SELECT v.${id(K_REGION)}, count(*) AS ${id(CUSTOMERS)}, sum(v.${id(V_TOTAL)}) AS ${id(V_TOTAL)}
  FROM ${id(VIEW)} AS v GROUP BY v.${id(K_REGION)}`

const byRegion = defineView({
  name: REGION_VIEW,
  key: [K_REGION],
  query: regionQuery,
  sources: { [VIEW]: { [K_REGION]: K_REGION } },
})

const regionTarget = { schema: SCHEMA, table: REGION_VIEW.slice(SCHEMA.length + 1) }

async function createTables(db: Kysely<any>): Promise<void> {
  await sql`CREATE TABLE x (id int)`.execute(db)
  await sql`INSERT INTO x VALUES (1)`.execute(db)
  await sql`CREATE SCHEMA ${id(SCHEMA)}`.execute(db)
  await sql`
    CREATE TABLE ${id(CUSTOMERS)} (
      ${id(C_ID)} bigint PRIMARY KEY, ${id(C_REGION)} text NOT NULL, ${id(C_NAME)} text
    )`.execute(db)
  await sql`
    CREATE TABLE ${id(ORDERS)} (
      ${id(O_ID)} bigserial PRIMARY KEY, ${id(O_CUSTOMER)} bigint NOT NULL,
      ${id(O_AMOUNT)} bigint NOT NULL
    )`.execute(db)
  await sql`
    CREATE TABLE ${id(LINES)} (
      ${id(L_ID)} bigserial PRIMARY KEY, ${id(L_ORDER)} bigint NOT NULL, ${id(L_QTY)} int NOT NULL
    )`.execute(db)
  await sql`
    INSERT INTO ${id(CUSTOMERS)} (${id(C_ID)}, ${id(C_REGION)}, ${id(C_NAME)})
    SELECT g, (${REGIONS}::text[])[1 + g % ${REGIONS.length}::int], ${`O'Name "`} || g || ${'"'}
    FROM generate_series(1, 30) AS g`.execute(db)
  await sql`
    INSERT INTO ${id(ORDERS)} (${id(O_CUSTOMER)}, ${id(O_AMOUNT)})
    SELECT 1 + (g * 7) % 30, 10 * g FROM generate_series(1, 90) AS g`.execute(db)
  await sql`
    INSERT INTO ${id(LINES)} (${id(L_ORDER)}, ${id(L_QTY)})
    SELECT 1 + (g * 13) % 90, g % 5 + 1 FROM generate_series(1, 150) AS g`.execute(db)
}

/** `(target EXCEPT query)` and `(query EXCEPT target)`. */
async function differences(
  db: Kysely<any>,
  target: { schema: string; table: string },
  query: RawBuilder<unknown>,
) {
  const t = id(target.schema, target.table)
  const extra = await sql`SELECT * FROM ${t} EXCEPT SELECT * FROM (${query}) AS q`.execute(db)
  const missing = await sql`SELECT * FROM (${query}) AS q EXCEPT SELECT * FROM ${t}`.execute(db)
  return { extra: extra.rows, missing: missing.rows }
}

async function countRows(db: Kysely<any>, from: RawBuilder<unknown>): Promise<number> {
  const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ${from} AS t`.execute(db)
  return Number(rows[0]!.n)
}

async function columnsOf(db: Kysely<any>, schema: string, table: string): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    SELECT a.attname AS name FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relname = ${table} AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY a.attnum`.execute(db)
  return rows.map((r) => r.name)
}

describe.each(DIALECTS)('hostile identifiers on %s', (dialect) => {
  let mv: Matview | undefined
  const database = useTestDatabase(dialect, {
    teardown: async () => {
      await mv?.close()
      mv = undefined
    },
  })

  const open = async (views: DeclarativeView[], batchSize = 4) => {
    await mv?.close()
    mv = await Matview.open({ database, batchSize, views })
    return mv
  }

  const expectCanary = async () => {
    expect(await countRows(database.db, id('public', 'x'))).toBe(1)
  }

  it('creates, backfills and maintains views whose every name is hostile', async () => {
    const db = database.db
    await createTables(db)
    // Listed in the wrong order: update orders a view after the view it reads.
    const first = await (await open([byRegion, totals])).update()
    expect(first.views.map((v) => [v.view, v.outcome, v.error])).toEqual([
      [VIEW, 'done', undefined],
      [REGION_VIEW, 'done', undefined],
    ])
    expect(first.views[0]).toMatchObject({ inserted: 30, notes: ['created', 'backfilled'] })
    expect(first.views[1]).toMatchObject({ inserted: REGIONS.length })

    // The targets carry the names exactly, columns too; the catalog row names the view.
    expect(await columnsOf(db, 'public', VIEW)).toEqual([
      K_REGION,
      K_CUSTOMER,
      C_NAME,
      V_ORDERS,
      V_TOTAL,
      V_QTY,
    ])
    expect(await columnsOf(db, regionTarget.schema, regionTarget.table)).toEqual([
      K_REGION,
      CUSTOMERS,
      V_TOTAL,
    ])
    const { rows: catalogRows } = await sql<{ name: string; target_table: string }>`
      SELECT name, target_table FROM matview.views ORDER BY id`.execute(db)
    expect(catalogRows).toEqual([
      { name: VIEW, target_table: VIEW },
      { name: REGION_VIEW, target_table: regionTarget.table },
    ])
    const { rows: keyRows } = await sql<{ k: string }>`
      SELECT DISTINCT ${id(K_REGION)} AS k FROM ${id(VIEW)}`.execute(db)
    expect(keyRows.map((r) => r.k).sort()).toEqual([...REGIONS].sort())
    expect(await differences(db, { schema: 'public', table: VIEW }, totalsQuery)).toEqual({
      extra: [],
      missing: [],
    })
    expect(await differences(db, regionTarget, regionQuery)).toEqual({ extra: [], missing: [] })
    await expectCanary()

    // Writes to every source: key moves, new keys with quotes, deletes, mapped sources.
    const newRegion = `new 'one' "2"\\`
    await sql`
      INSERT INTO ${id(CUSTOMERS)} (${id(C_ID)}, ${id(C_REGION)}, ${id(C_NAME)})
      VALUES (31, ${newRegion}, ${"'; DROP TABLE x; --"}), (32, ${REGIONS[2]!}, NULL)`.execute(db)
    await sql`UPDATE ${id(CUSTOMERS)} SET ${id(C_REGION)} = ${REGIONS[1]!}
              WHERE ${id(C_REGION)} = ${REGIONS[0]!}`.execute(db)
    await sql`UPDATE ${id(CUSTOMERS)} SET ${id(C_NAME)} = ${'"renamed"'} WHERE ${id(C_ID)} = 3`.execute(
      db,
    )
    await sql`DELETE FROM ${id(LINES)} WHERE ${id(L_ORDER)} IN (
                SELECT ${id(O_ID)} FROM ${id(ORDERS)} WHERE ${id(O_CUSTOMER)} = 4)`.execute(db)
    await sql`DELETE FROM ${id(ORDERS)} WHERE ${id(O_CUSTOMER)} = 4`.execute(db)
    await sql`DELETE FROM ${id(CUSTOMERS)} WHERE ${id(C_ID)} = 4`.execute(db)
    await sql`INSERT INTO ${id(ORDERS)} (${id(O_CUSTOMER)}, ${id(O_AMOUNT)})
              VALUES (31, 500), (32, 700), (5, 1)`.execute(db)
    await sql`UPDATE ${id(ORDERS)} SET ${id(O_CUSTOMER)} = 31 WHERE ${id(O_CUSTOMER)} = 6`.execute(
      db,
    )
    await sql`UPDATE ${id(LINES)} SET ${id(L_QTY)} = ${id(L_QTY)} + 10
              WHERE ${id(L_ID)} % 7 = 0`.execute(db)
    await sql`INSERT INTO ${id(LINES)} (${id(L_ORDER)}, ${id(L_QTY)})
              SELECT ${id(O_ID)}, 3 FROM ${id(ORDERS)} WHERE ${id(O_CUSTOMER)} = 32`.execute(db)

    const [pending] = await mv!.status({ views: [VIEW] })
    expect(pending!.pending!.total).toBeGreaterThan(0)
    const second = await mv!.update()
    expect(second.views.map((v) => [v.view, v.outcome, v.error])).toEqual([
      [VIEW, 'done', undefined],
      [REGION_VIEW, 'done', undefined],
    ])
    expect(second.views[0]!.batches).toBeGreaterThan(1)
    expect(second.views[0]!.deleted).toBeGreaterThan(0)
    expect(await differences(db, { schema: 'public', table: VIEW }, totalsQuery)).toEqual({
      extra: [],
      missing: [],
    })
    expect(await differences(db, regionTarget, regionQuery)).toEqual({ extra: [], missing: [] })
    // The region no customer is in any more is gone, the new one is there.
    const { rows: regions } = await sql<{ k: string }>`
      SELECT ${id(K_REGION)} AS k FROM ${id(regionTarget.schema, regionTarget.table)}`.execute(db)
    expect(regions.map((r) => r.k).sort()).toEqual(
      [...REGIONS.filter((r) => r !== REGIONS[0]), newRegion].sort(),
    )
    for (const status of await mv!.status()) {
      expect(status).toMatchObject({ state: 'ready', pending: { total: 0 } })
    }
    await expectCanary()
  })

  it('marks the hostile view for a rebuild when its source is truncated', async () => {
    const db = database.db
    await createTables(db)
    await (await open([totals])).update()
    await sql`TRUNCATE ${id(LINES)}`.execute(db)
    const [status] = await mv!.status()
    expect(status).toMatchObject({ name: VIEW, state: 'needs_rebuild' })
    // The reason names the table the way SQL would (quoted), without running it.
    expect(status!.stateReason).toBe(`source public."Line 'Items'" was truncated`)
    await expectCanary()
  })

  it('keeps text keys with quotes, brackets and backslashes intact through a ranged backfill', async () => {
    const db = database.db
    const table = `Kéys "T" '${DROP}`
    const key = `k "1" '${DROP}`
    const value = `v'"`
    await sql`CREATE TABLE x (id int)`.execute(db)
    await sql`INSERT INTO x VALUES (1)`.execute(db)
    await sql`CREATE TABLE ${id(table)} (${id(key)} text PRIMARY KEY, ${id(value)} int NOT NULL)`.execute(
      db,
    )
    // Enough rows for the backfill to split the key into ranges, whose bounds are these values.
    await sql`
      INSERT INTO ${id(table)}
      SELECT ${'k"'} || g || ${`'{},\\ "x"`} || (ARRAY['a', 'b', 'ü'])[1 + g % 3], g
      FROM generate_series(1, 120000) AS g`.execute(db)
    const query = sql`SELECT ${id(key)}, ${id(value)} * 2 AS ${id(value)} FROM ${id(table)}`
    const view = defineView({
      name: `Cöpy "${DROP}`,
      key: [key],
      query,
      sources: { [table]: { [key]: key } },
    })
    const first = await (await open([view], 5000)).update()
    expect(first.views[0]).toMatchObject({ outcome: 'done', inserted: 120000 })
    // Filled by key ranges (a few large batches), not by 24 pages of batchSize keys.
    expect(first.views[0]!.batches).toBeGreaterThan(1)
    expect(first.views[0]!.batches).toBeLessThan(120000 / 5000)
    const target = { schema: 'public', table: view.name }
    expect(await differences(db, target, query)).toEqual({ extra: [], missing: [] })

    await sql`UPDATE ${id(table)} SET ${id(value)} = -1 WHERE ${id(value)} % 1000 = 0`.execute(db)
    await sql`DELETE FROM ${id(table)} WHERE ${id(value)} % 999 = 0`.execute(db)
    const second = await mv!.update()
    expect(second.views[0]).toMatchObject({ outcome: 'done' })
    expect(second.views[0]!.updated + second.views[0]!.deleted).toBeGreaterThan(200)
    expect(await differences(db, target, query)).toEqual({ extra: [], missing: [] })
    await expectCanary()
  })

  it('refuses a view name PostgreSQL would cut short, instead of creating another name', async () => {
    const db = database.db
    await createTables(db)
    // PostgreSQL keeps 63 bytes of a table name: this one would become 31 Üs.
    const long = 'Ü'.repeat(35)
    expect(Buffer.byteLength(long)).toBe(70)
    const view = defineView({ ...totals, name: long })
    const { views } = await (await open([view])).update()
    expect(views[0]).toMatchObject({ outcome: 'failed' })
    expect(views[0]!.cause).toBeInstanceOf(ViewDefinitionError)
    expect(views[0]!.error).toMatch(/longer than PostgreSQL's limit of 63 bytes/)
    const { rows } = await sql<{ n: string }>`
      SELECT count(*) AS n FROM pg_catalog.pg_class WHERE relname LIKE ${'ÜÜÜ%'}`.execute(db)
    expect(Number(rows[0]!.n)).toBe(0)
    await expectCanary()
  })
})
