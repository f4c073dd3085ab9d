import { describe, expect, it } from 'vitest'
import {
  type DeclarativeView,
  defineView,
  type Kysely,
  Matview,
  sql,
  ViewDefinitionError,
  type ViewResult,
} from '../../src/index.js'
import { CATALOG_FUNCTIONS, CATALOG_TABLES } from '../support/catalog.js'
import { DIALECTS } from '../support/dialects.js'
import { useTestDatabase } from '../support/test-database.js'

// Bad definitions, changed definitions and TRUNCATE, as a user meets them: through `update`'s
// result, `status` and the database itself (pg_class, pg_trigger, the catalog).

const CATALOG = 'matview'

const totalsQuery = sql`
  SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.status = 'paid'
  GROUP BY o.customer_id, c.region`

/** A correct view that runs next to every broken one: a failing view must not stop the others. */
const customerTotals = defineView({
  name: 'customer_totals',
  key: ['customer_id'],
  query: totalsQuery,
  sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
})

async function createTables(db: Kysely<any>): Promise<void> {
  await sql`CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, region text)`.execute(
    db,
  )
  await sql`
    CREATE TABLE orders (
      id bigserial PRIMARY KEY,
      customer_id bigint NOT NULL,
      amount_cents bigint NOT NULL,
      status text NOT NULL
    )`.execute(db)
  await sql`CREATE TABLE products (id bigint PRIMARY KEY, title text NOT NULL)`.execute(db)
  await sql`
    INSERT INTO customers (id, name, region)
    VALUES (1, 'Ada', 'north'), (2, 'Bob', 'south'), (3, 'Cy', 'north'), (4, 'Di', 'east')`.execute(
    db,
  )
  await sql`
    INSERT INTO orders (customer_id, amount_cents, status)
    SELECT 1 + g % 4, 100 * g, CASE WHEN g % 3 = 0 THEN 'pending' ELSE 'paid' END
    FROM generate_series(1, 40) AS g`.execute(db)
  await sql`INSERT INTO products (id, title) VALUES (1, 'pen')`.execute(db)
}

/** Rows of a table or query, sorted, as JSON text: compares across drivers and types. */
async function rowsOf(db: Kysely<any>, from: ReturnType<typeof sql>): Promise<string[]> {
  const { rows } = await sql<{
    r: string
  }>`SELECT row_to_json(t)::text AS r FROM ${from} AS t`.execute(db)
  return rows.map((row) => row.r).sort()
}

/** `(target EXCEPT query)` and `(query EXCEPT target)`, over the query's columns. */
async function differences(db: Kysely<any>, target: string, query: ReturnType<typeof sql>) {
  const extra =
    await sql`SELECT * FROM ${sql.id(target)} EXCEPT SELECT * FROM (${query}) AS q`.execute(db)
  const missing =
    await sql`SELECT * FROM (${query}) AS q EXCEPT SELECT * FROM ${sql.id(target)}`.execute(db)
  return { extra: extra.rows, missing: missing.rows }
}

async function relationExists(db: Kysely<any>, schema: string, table: string): Promise<boolean> {
  const { rows } = await sql<{ n: string }>`
    SELECT count(*) AS n FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${schema} AND c.relname = ${table}`.execute(db)
  return Number(rows[0]!.n) > 0
}

/**
 * Every object matview makes for a declarative view carries the view's catalog id in its name
 * (log_ID, inbox_ID, stage_ID_N, capture_ID_N, matview_ID_N_event triggers). Returns the ones whose id is
 * not a view in the catalog, or that follow no such pattern (user tables here have no triggers):
 * what a failed create would have left behind. Also returns the objects of the catalogued
 * views, so a test can check it is looking at real objects.
 */
async function strayObjects(db: Kysely<any>) {
  const { rows: views } = await sql<{ id: number }>`
    SELECT id FROM ${sql.id(CATALOG, 'views')} WHERE kind = 'declarative'`.execute(db)
  const ids = new Set(views.map((v) => String(v.id)))
  const { rows: tables } = await sql<{ name: string }>`
    SELECT c.relname AS name FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ${CATALOG} AND c.relname <> ALL(${[...CATALOG_TABLES]})
      AND c.relkind IN ('r', 'p', 'v', 'm')`.execute(db)
  const { rows: functions } = await sql<{ name: string }>`
    SELECT p.proname AS name FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = ${CATALOG} AND p.proname <> ALL(${[...CATALOG_FUNCTIONS]})`.execute(db)
  const { rows: triggers } = await sql<{ name: string; on: string }>`
    SELECT t.tgname AS name, t.tgrelid::regclass::text AS on
    FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal`.execute(db)
  const { rows: probes } = await sql<{ name: string }>`
    SELECT relname AS name FROM pg_catalog.pg_class WHERE relname LIKE 'matview\\_probe%'`.execute(
    db,
  )
  const { rows: sourceRows } = await sql<{ view: string }>`
    SELECT vs.view FROM ${sql.id(CATALOG, 'view_sources')} AS vs
    WHERE NOT EXISTS (SELECT 1 FROM ${sql.id(CATALOG, 'views')} AS v WHERE v.name = vs.view)`.execute(
    db,
  )
  const idOf = (name: string, pattern: RegExp) => pattern.exec(name)?.[1]
  const stray: string[] = []
  const owned: string[] = []
  const sort = (name: string, id: string | undefined) =>
    (id !== undefined && ids.has(id) ? owned : stray).push(name)
  for (const t of tables)
    sort(`table ${t.name}`, idOf(t.name, /^(?:log|inbox|stage)_(\d+)(?:_\d+)?$/))
  for (const f of functions) sort(`function ${f.name}`, idOf(f.name, /^capture_(\d+)_\d+$/))
  for (const t of triggers)
    sort(`trigger ${t.name} on ${t.on}`, idOf(t.name, new RegExp(`^${CATALOG}_(\\d+)_\\d+_`)))
  for (const p of probes) stray.push(`probe ${p.name}`)
  for (const s of sourceRows) stray.push(`view_sources row of ${s.view}`)
  return { stray, owned }
}

/** What a failed create must not leave: the target, the catalog row, logs, stages, triggers. */
async function expectNothingLeft(
  db: Kysely<any>,
  view: string,
  target: { schema: string; table: string } | undefined,
) {
  const { rows } = await sql<{ n: string }>`
    SELECT (SELECT count(*) FROM ${sql.id(CATALOG, 'views')} WHERE name = ${view})
         + (SELECT count(*) FROM ${sql.id(CATALOG, 'view_sources')} WHERE view = ${view}) AS n`.execute(
    db,
  )
  expect(Number(rows[0]!.n), `catalog rows of "${view}"`).toBe(0)
  if (target) {
    expect(
      await relationExists(db, target.schema, target.table),
      `target ${target.schema}.${target.table}`,
    ).toBe(false)
  }
  const { stray, owned } = await strayObjects(db)
  expect(stray).toEqual([])
  return owned
}

function resultOf(results: ViewResult[], view: string): ViewResult {
  const result = results.find((r) => r.view === view)
  expect(result, `a result for view "${view}"`).toBeDefined()
  return result!
}

/** The one-line message a failed view reports, checked for what every message must have. */
function expectOneLineError(result: ViewResult, view: string): string {
  expect(result.outcome).toBe('failed')
  expect(typeof result.error).toBe('string')
  expect(result.error).not.toContain('\n')
  expect(result.error!.startsWith(`view "${view}": `)).toBe(true)
  return result.error!
}

interface BadDefinition {
  title: string
  view: DeclarativeView
  /** Extra tables or data the case needs. */
  setup?: (db: Kysely<any>) => Promise<void>
  /** Where the target would have gone (default public.<name>); undefined when it is the user's. */
  target?: { schema: string; table: string } | null
  /** Each must match the message: the problem, the culprit, and what to do. */
  error: RegExp[]
}

const BAD_DEFINITIONS: BadDefinition[] = [
  {
    title: 'a query that does not return a key column',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: sql`SELECT id AS cid, name FROM customers`,
      sources: { customers: { customer_id: 'id' } },
    }),
    error: [/key column "customer_id" is not a column of the query's result/, /it has: cid, name/],
  },
  {
    title: 'a key column that is NULL in the result',
    setup: async (db) => {
      await sql`INSERT INTO customers (id, name, region) VALUES (9, 'Nemo', NULL)`.execute(db)
    },
    view: defineView({
      name: 'broken',
      key: ['region'],
      query: sql`SELECT region, count(*) AS customers FROM customers GROUP BY region`,
      sources: { customers: { region: 'region' } },
    }),
    error: [/key column "region" is NULL/, /filter such rows out or coalesce/],
  },
  {
    title: 'a duplicate key in the data the view starts from',
    view: defineView({
      name: 'broken',
      key: ['region'],
      query: sql`SELECT region, name FROM customers`,
      sources: { customers: { region: 'region' } },
    }),
    // Two customers live in the north; the message names the key value.
    error: [/more than one row for key \(region\)=\(north\)/, /fix the key or the query/],
  },
  {
    title: 'a missing source table (read by the query too)',
    view: defineView({
      name: 'broken',
      key: ['order_id'],
      query: sql`SELECT order_id, sum(quantity) AS quantity FROM line_items GROUP BY order_id`,
      sources: { line_items: { order_id: 'order_id' } },
    }),
    error: [/source table "line_items" does not exist/, /create it first or fix the name/],
  },
  {
    title: 'a missing source table (a typo in sources)',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { ordrs: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
    }),
    error: [/source table "ordrs" does not exist/],
  },
  {
    title: 'a column map naming a column the source lacks',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { orders: { customer_id: 'cust_id' }, customers: { customer_id: 'id' } },
    }),
    error: [
      /source "orders" maps key column "customer_id" to column "cust_id", which "public\.orders" does not have/,
      /it has: id, customer_id, amount_cents, status/,
    ],
  },
  {
    title: 'a column map that does not cover every key column',
    view: defineView({
      name: 'broken',
      key: ['customer_id', 'region'],
      query: totalsQuery,
      sources: {
        orders: { customer_id: 'customer_id' },
        customers: { customer_id: 'id', region: 'region' },
      },
    }),
    error: [/source "orders" maps no column to key column "region"/, /SQL query over "changed"/],
  },
  {
    title: 'a source the query does not read',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: {
        orders: { customer_id: 'customer_id' },
        customers: { customer_id: 'id' },
        products: { customer_id: 'id' },
      },
    }),
    error: [/source "products" is not read by the query/, /remove it from sources/],
  },
  {
    title: 'a table the query reads that is not in sources',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { orders: { customer_id: 'customer_id' } },
    }),
    error: [/reads "public\.customers", which is not in sources/, /add it with its key mapping/],
  },
  {
    title: 'a view name that is an existing table matview did not make',
    setup: async (db) => {
      await sql`CREATE TABLE region_report (region text PRIMARY KEY, note text)`.execute(db)
      await sql`INSERT INTO region_report VALUES ('north', 'hand-made')`.execute(db)
    },
    target: null,
    view: defineView({
      name: 'region_report',
      key: ['region'],
      query: sql`SELECT region, count(*) AS customers FROM customers GROUP BY region`,
      sources: { customers: { region: 'region' } },
    }),
    error: [
      /a table named "public\.region_report" already exists and matview did not create it/,
      /drop or rename it, or give the view another name/,
    ],
  },
  {
    title: 'a syntax error in the query',
    view: defineView({
      name: 'broken',
      key: ['id'],
      query: sql`SELEC id, name FROM customers`,
      sources: { customers: { id: 'id' } },
    }),
    error: [/the query fails: syntax error at or near "SELEC"/],
  },
  {
    title: 'a query with an interpolated value',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: sql`SELECT customer_id, count(*) AS n FROM orders WHERE status = ${'paid'} GROUP BY customer_id`,
      sources: { orders: { customer_id: 'customer_id' } },
    }),
    error: [/the query has 1 interpolated value/, /sql\.lit\(value\)/],
  },
  {
    title: 'a schema-qualified name in a schema that does not exist',
    view: defineView({
      name: 'reporting.customer_totals',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
    }),
    target: { schema: 'reporting', table: 'customer_totals' },
    error: [/schema "reporting" does not exist; create it first/],
  },
  {
    title: 'a source name written in another case than the table',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { Orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
    }),
    error: [/source table "Orders" does not exist/, /did you mean "orders"\?/],
  },
  {
    title: 'a source that is a plain view, not a table',
    setup: async (db) => {
      await sql`CREATE VIEW paid_orders AS SELECT * FROM orders WHERE status = 'paid'`.execute(db)
    },
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: sql`SELECT customer_id, count(*) AS n FROM paid_orders GROUP BY customer_id`,
      sources: { paid_orders: { customer_id: 'customer_id' } },
    }),
    error: [/source "paid_orders" is not a table/],
  },
  {
    title: 'a key that names a column twice',
    view: defineView({
      name: 'broken',
      key: ['customer_id', 'customer_id'],
      query: totalsQuery,
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
    }),
    error: [/key names a column twice: customer_id, customer_id/],
  },
  {
    title: 'a key column that is an array',
    view: defineView({
      name: 'broken',
      key: ['customer_ids'],
      query: sql`SELECT array_agg(customer_id ORDER BY customer_id) AS customer_ids, count(*) AS n
                 FROM orders GROUP BY status`,
      sources: { orders: sql`SELECT array_agg(customer_id) AS customer_ids FROM changed` },
    }),
    error: [/key column "customer_ids" is an array \(bigint\[\]\); key the view by scalar columns/],
  },
  {
    title: 'a column map from a column that cannot hold the key',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'name' } },
    }),
    error: [/source "customers" cannot feed the key from "name"/, /bigint.*text|text.*bigint/],
  },
  {
    title: 'a column map whose conversion to the key depends on the session (timestamptz to date)',
    setup: async (db) => {
      await sql`CREATE TABLE visits (id bigint PRIMARY KEY, at timestamptz NOT NULL)`.execute(db)
    },
    view: defineView({
      name: 'daily',
      key: ['day'],
      query: sql`SELECT at::date AS day, count(*) AS n FROM visits GROUP BY 1`,
      sources: { visits: { day: 'at' } },
    }),
    error: [
      /source "visits" maps key column "day" to column "at": converting timestamp with time zone to date depends on the session's settings/,
      /map a column of the key's type \(date\), or map the source with a SQL query over "changed"/,
    ],
  },
  {
    title: "a view in matview's own catalog schema",
    view: defineView({
      name: 'matview.customer_totals',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
    }),
    target: { schema: 'matview', table: 'customer_totals' },
    error: [/schema "matview" is matview's catalog; create the view in another schema/],
  },
  {
    title: 'a SQL mapping that does not return the key',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: {
        orders: sql`SELECT customer_id AS cid FROM changed`,
        customers: { customer_id: 'id' },
      },
    }),
    error: [/the mapping of source "orders" does not return key column "customer_id"/],
  },
  {
    title: 'an index on a column the query does not return',
    view: defineView({
      name: 'broken',
      key: ['customer_id'],
      query: totalsQuery,
      sources: { orders: { customer_id: 'customer_id' }, customers: { customer_id: 'id' } },
      indexes: [['regoin']],
    }),
    error: [/index column "regoin" is not a column of the query's result/],
  },
]

describe.each(DIALECTS)('declarative definition errors on %s', (dialect) => {
  let mv: Matview | undefined
  const database = useTestDatabase(dialect, {
    setup: async ({ db }) => {
      await createTables(db)
    },
    teardown: async () => {
      await mv?.close()
      mv = undefined
    },
  })

  const open = async (views: DeclarativeView[]) => {
    await mv?.close()
    mv = await Matview.open({ database, batchSize: 2, views })
    return mv
  }

  // A loop rather than it.each: it.each would cut the titles short in the report.
  for (const bad of BAD_DEFINITIONS) {
    it(`refuses ${bad.title} at create time and leaves nothing`, async () => {
      const db = database.db
      await bad.setup?.(db)
      const before = bad.target === null ? await rowsOf(db, sql.id(bad.view.name)) : undefined
      const { views } = await (await open([bad.view, customerTotals])).update()

      const result = resultOf(views, bad.view.name)
      const message = expectOneLineError(result, bad.view.name)
      for (const pattern of bad.error) expect(message).toMatch(pattern)
      expect(result.cause).toBeInstanceOf(ViewDefinitionError)
      expect(result.cause).toMatchObject({ code: 'VIEW_DEFINITION', view: bad.view.name })
      expect(result).toMatchObject({ inserted: 0, batches: 0 })

      // The good view next to it was created and filled all the same.
      expect(resultOf(views, 'customer_totals')).toMatchObject({ outcome: 'done' })
      expect(await differences(db, 'customer_totals', totalsQuery)).toEqual({
        extra: [],
        missing: [],
      })

      const target =
        bad.target === undefined ? { schema: 'public', table: bad.view.name } : bad.target
      const owned = await expectNothingLeft(db, bad.view.name, target ?? undefined)
      // The check above looked at real objects: the good view's log and its 2 × 4 triggers.
      expect(owned.filter((o) => o.startsWith('trigger '))).toHaveLength(8)
      expect(owned.some((o) => o.startsWith('table log_'))).toBe(true)
      if (before) expect(await rowsOf(db, sql.id(bad.view.name))).toEqual(before)

      // The failure is on record, and the view is still new: the next update tries again.
      const [run] = await mv!.history(bad.view.name)
      expect(run).toMatchObject({ outcome: 'failed', error: message })
      const [status] = await mv!.status({ views: [bad.view.name] })
      expect(status).toMatchObject({ state: 'new' })
    })
  }

  it('creates the view once the definition is fixed, under the same name', async () => {
    const db = database.db
    const broken = BAD_DEFINITIONS.find((b) => b.title.startsWith('a table the query reads'))!
    const first = await (await open([broken.view])).update()
    expect(first.views[0]).toMatchObject({ outcome: 'failed' })
    const fixed = defineView({ ...customerTotals, name: broken.view.name })
    const second = await (await open([fixed])).update()
    expect(second.views[0]).toMatchObject({ outcome: 'done', notes: ['created', 'backfilled'] })
    expect(await differences(db, broken.view.name, totalsQuery)).toEqual({ extra: [], missing: [] })
  })

  it('refuses views that read each other in a cycle, before creating either', async () => {
    const a = defineView({
      name: 'view_a',
      key: ['customer_id'],
      query: sql`SELECT customer_id, total_cents FROM view_b`,
      sources: { view_b: { customer_id: 'customer_id' } },
    })
    const b = defineView({
      name: 'view_b',
      key: ['customer_id'],
      query: sql`SELECT customer_id, total_cents FROM view_a`,
      sources: { view_a: { customer_id: 'customer_id' } },
    })
    await open([customerTotals, a, b])
    const failure = await mv!.update().then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(failure).toBeInstanceOf(ViewDefinitionError)
    const message = (failure as Error).message
    expect(message).not.toContain('\n')
    expect(message).toMatch(/cycle: view_(a|b) -> view_(a|b) -> view_(a|b)/)
    expect(message).toContain('view_a')
    expect(message).toContain('view_b')
    for (const name of ['view_a', 'view_b', 'customer_totals'])
      await expectNothingLeft(database.db, name, { schema: 'public', table: name })
  })

  // Two ways a write can make a key repeat: two new rows, or a new row next to the stored one
  // (the stored row is unchanged, so the upsert's IS DISTINCT FROM skips it).
  it.each([
    {
      made: 'two new rows for one key',
      insert: sql`VALUES (5, 'Eve', 'west'), (6, 'Fay', 'west'), (7, 'Gus', 'central')`,
      duplicate: 'west',
      fix: sql`UPDATE customers SET region = 'up' WHERE id = 6`,
    },
    {
      made: 'a new row for a key the target holds',
      insert: sql`VALUES (5, 'Eve', 'south'), (6, 'Fay', 'west')`,
      duplicate: 'south',
      fix: sql`UPDATE customers SET region = 'central' WHERE id = 5`,
    },
  ])(
    'reports a duplicate key made by a later write ($made), names it, and keeps its keys pending',
    async ({ insert, duplicate, fix }) => {
      const db = database.db
      const query = sql`SELECT region, name FROM customers WHERE region IS DISTINCT FROM 'north'`
      const byRegion = defineView({
        name: 'customer_by_region',
        key: ['region'],
        query,
        sources: { customers: { region: 'region' } },
      })
      expect((await (await open([byRegion, customerTotals])).update()).views).toMatchObject([
        { view: 'customer_by_region', outcome: 'done' },
        { view: 'customer_totals', outcome: 'done' },
      ])
      const before = await rowsOf(db, sql.id('customer_by_region'))
      expect(before).toHaveLength(2)

      // The duplicate, another key in the same batch (batchSize 2), and a change to another view.
      await sql`INSERT INTO customers (id, name, region) ${insert}`.execute(db)
      await sql`UPDATE orders SET amount_cents = amount_cents + 1 WHERE customer_id = 2`.execute(db)
      const { views } = await mv!.update()
      const message = expectOneLineError(
        resultOf(views, 'customer_by_region'),
        'customer_by_region',
      )
      expect(message).toContain(`more than one row for key (region)=(${duplicate})`)
      expect(message).toMatch(/fix the key or the query/)
      expect(resultOf(views, 'customer_totals')).toMatchObject({ outcome: 'done' })

      // Nothing of the failed batch was written, and its keys wait in the log.
      expect(await rowsOf(db, sql.id('customer_by_region'))).toEqual(before)
      const [status] = await mv!.status({ views: ['customer_by_region'] })
      expect(status).toMatchObject({ state: 'ready' })
      expect(status!.pending!.detail.keys).toBe(2)

      // The same update fails the same way until the data is fixed; then it all applies.
      const again = await mv!.update({ views: ['customer_by_region'] })
      expect(again.views[0]!.error).toBe(message)
      await fix.execute(db)
      const fixed = await mv!.update({ views: ['customer_by_region'] })
      expect(fixed.views[0]).toMatchObject({ outcome: 'done' })
      expect(await differences(db, 'customer_by_region', query)).toEqual({ extra: [], missing: [] })
      const [after] = await mv!.status({ views: ['customer_by_region'] })
      expect(after!.pending).toMatchObject({ total: 0 })
    },
  )

  it('leaves a view whose definition changed untouched and says to rebuild it', async () => {
    const db = database.db
    await (await open([customerTotals])).update()
    const before = await rowsOf(db, sql.id('customer_totals'))
    await sql`UPDATE orders SET amount_cents = amount_cents * 2 WHERE customer_id = 1`.execute(db)

    const changed = defineView({
      ...customerTotals,
      query: sql`
        SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
        FROM orders o JOIN customers c ON c.id = o.customer_id
        GROUP BY o.customer_id, c.region`,
    })
    const other = defineView({
      name: 'region_counts',
      key: ['region'],
      query: sql`SELECT region, count(*) AS customers FROM customers GROUP BY region`,
      sources: { customers: { region: 'region' } },
    })
    const { views } = await (await open([changed, other])).update()
    const result = resultOf(views, 'customer_totals')
    const message = expectOneLineError(result, 'customer_totals')
    expect(message).toMatch(/definition changed/)
    expect(message).toContain('run "matview rebuild customer_totals"')
    expect(result.cause).toMatchObject({ code: 'DEFINITION_CHANGED' })
    expect(result).toMatchObject({ inserted: 0, updated: 0, deleted: 0, batches: 0 })
    expect(resultOf(views, 'region_counts')).toMatchObject({ outcome: 'done' })

    // Untouched: the rows the old definition computed, the change still waiting for it.
    expect(await rowsOf(db, sql.id('customer_totals'))).toEqual(before)
    const [status] = await mv!.status({ views: ['customer_totals'] })
    expect(status!.pending!.detail.keys).toBe(1)
    expect((await mv!.update({ views: ['customer_totals'] })).views[0]!.error).toBe(message)

    // The old definition still owns the view and applies the change.
    const back = await (await open([customerTotals])).update()
    expect(back.views[0]).toMatchObject({ outcome: 'done', updated: 1 })
    expect(await differences(db, 'customer_totals', totalsQuery)).toEqual({
      extra: [],
      missing: [],
    })
  })

  it('marks a view for a rebuild when a source is truncated, and update refuses it', async () => {
    const db = database.db
    const other = defineView({
      name: 'product_titles',
      key: ['id'],
      query: sql`SELECT id, title FROM products`,
      sources: { products: { id: 'id' } },
    })
    await (await open([customerTotals, other])).update()
    const before = await rowsOf(db, sql.id('customer_totals'))
    expect(before.length).toBeGreaterThan(0)

    await sql`TRUNCATE orders`.execute(db)
    const statuses = await mv!.status()
    const status = statuses.find((s) => s.name === 'customer_totals')
    expect(status).toMatchObject({ state: 'needs_rebuild' })
    expect(status!.stateReason).toMatch(/source public\.orders was truncated/)
    expect(statuses.find((s) => s.name === 'product_titles')).toMatchObject({ state: 'ready' })

    const { views } = await mv!.update()
    const message = expectOneLineError(resultOf(views, 'customer_totals'), 'customer_totals')
    expect(message).toMatch(/needs a rebuild \(source public\.orders was truncated\)/)
    expect(message).toContain('run "matview rebuild customer_totals"')
    expect(resultOf(views, 'product_titles')).toMatchObject({ outcome: 'done' })
    // Refused, not emptied: the target keeps its rows until the rebuild.
    expect(await rowsOf(db, sql.id('customer_totals'))).toEqual(before)
    const [still] = await mv!.status({ views: ['customer_totals'] })
    expect(still).toMatchObject({ state: 'needs_rebuild' })
  })
})
