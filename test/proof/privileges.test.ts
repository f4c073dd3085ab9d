import { randomBytes } from 'node:crypto'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { defineView, Matview } from '../../src/index.js'
import { queryDifferences } from '../../src/views/query-differences.js'
import { available, freshDatabase, type TestDatabase } from '../support/dialects.js'

// The two-role setup of docs/least-privilege.md, and the CVE-2018-1058 class of attack on the
// capture triggers. PostgreSQL only: roles are cluster-wide, and the point is several logins
// (the application, matview, an attacker), each with its own rights.

const TOTALS = sql`
  SELECT o.customer_id, c.region, count(*) AS order_count, sum(o.amount_cents) AS total_cents
  FROM app.orders o JOIN app.customers c ON c.id = o.customer_id
  GROUP BY o.customer_id, c.region`
const TOTALS_COLUMNS = ['customer_id', 'region', 'order_count', 'total_cents']
// Keyed by region, which orders do not hold: a query mapping, so the capture stages whole rows
// with to_jsonb (the function the attack below shadows).
const REGIONS = sql`
  SELECT c.region, count(*) AS order_count FROM app.orders o
  JOIN app.customers c ON c.id = o.customer_id GROUP BY c.region`

const views = [
  defineView({
    name: 'reporting.customer_totals',
    key: ['customer_id'],
    query: TOTALS,
    sources: {
      'app.orders': { customer_id: 'customer_id' },
      'app.customers': { customer_id: 'id' },
    },
  }),
  defineView({
    name: 'reporting.region_orders',
    key: ['region'],
    query: REGIONS,
    sources: {
      'app.orders': sql`SELECT c.region FROM changed ch JOIN app.customers c ON c.id = ch.customer_id`,
      'app.customers': { region: 'region' },
    },
  }),
]

describe('least privilege on PostgreSQL', () => {
  let database: TestDatabase | undefined
  const suffix = randomBytes(4).toString('hex')
  const role = {
    app: `proof_app_${suffix}`,
    matview: `proof_mv_${suffix}`,
    evil: `proof_evil_${suffix}`,
  }
  const opened: Array<{ destroy(): Promise<void> }> = []

  /** A Kysely connection logged in as `user`. */
  const login = (user: string) => {
    const url = new URL(database!.url!)
    url.username = user
    const db = new Kysely<any>({
      dialect: new PostgresDialect({
        pool: new pg.Pool({ connectionString: url.toString(), max: 2 }),
      }),
    })
    opened.push(db)
    return { db, url: url.toString() }
  }

  beforeEach(async ({ skip }) => {
    if (!(await available('postgres'))) skip()
    database = await freshDatabase('postgres')
    const admin = database.db
    const dbName = new URL(database.url!).pathname.slice(1)
    for (const name of Object.values(role))
      await sql`CREATE ROLE ${sql.id(name)} LOGIN`.execute(admin)
    // The application owns its schema and tables; its search_path puts public first, where the
    // attacker may create objects (the CVE-2018-1058 setup).
    await sql`CREATE SCHEMA app AUTHORIZATION ${sql.id(role.app)}`.execute(admin)
    await sql`ALTER ROLE ${sql.id(role.app)} IN DATABASE ${sql.id(dbName)} SET search_path = public, app`.execute(
      admin,
    )
    await sql`GRANT CREATE ON SCHEMA public TO ${sql.id(role.evil)}`.execute(admin)
    // matview's role: creates its catalog schema, owns the schema of the targets.
    await sql`GRANT CREATE ON DATABASE ${sql.id(dbName)} TO ${sql.id(role.matview)}`.execute(admin)
    await sql`CREATE SCHEMA reporting AUTHORIZATION ${sql.id(role.matview)}`.execute(admin)

    const app = login(role.app).db
    await sql`CREATE TABLE app.customers (id bigint PRIMARY KEY, region text NOT NULL)`.execute(app)
    await sql`CREATE TABLE app.orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
      amount_cents bigint NOT NULL)`.execute(app)
    await sql`INSERT INTO app.customers SELECT g, 'region ' || g % 4 FROM generate_series(1, 20) g`.execute(
      app,
    )
    await sql`INSERT INTO app.orders (customer_id, amount_cents)
      SELECT 1 + g % 20, g FROM generate_series(1, 200) g`.execute(app)
    // What the application grants matview: read its tables and put triggers on them.
    await sql`GRANT USAGE ON SCHEMA app TO ${sql.id(role.matview)}`.execute(app)
    await sql`GRANT SELECT, TRIGGER ON app.customers, app.orders TO ${sql.id(role.matview)}`.execute(
      app,
    )
  })

  afterEach(async () => {
    for (const db of opened.splice(0)) await db.destroy()
    if (database) {
      for (const name of Object.values(role))
        await sql`DROP OWNED BY ${sql.id(name)} CASCADE`.execute(database.db).catch(() => {})
      await database.close()
    }
    database = undefined
    const admin = new pg.Client({
      connectionString:
        process.env.MATVIEW_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    })
    await admin.connect()
    for (const name of Object.values(role)) await admin.query(`DROP ROLE IF EXISTS ${name}`)
    await admin.end()
  })

  /** Creates the views as matview's role and grants the application read access to them. */
  const createViews = async () => {
    const mv = await Matview.open({ database: login(role.matview).url, views })
    const first = await mv.update()
    expect(first.views.map((v) => [v.view, v.outcome, v.error])).toEqual([
      ['reporting.customer_totals', 'done', undefined],
      ['reporting.region_orders', 'done', undefined],
    ])
    const asMatview = login(role.matview).db
    await sql`GRANT USAGE ON SCHEMA reporting TO ${sql.id(role.app)}`.execute(asMatview)
    await sql`GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO ${sql.id(role.app)}`.execute(
      asMatview,
    )
    return mv
  }

  const expectEqual = async () => {
    const admin = database!.db
    expect(
      await queryDifferences(admin, 'reporting.customer_totals', TOTALS, TOTALS_COLUMNS),
    ).toEqual({ extra: [], missing: [] })
    expect(
      await queryDifferences(admin, 'reporting.region_orders', REGIONS, ['region', 'order_count']),
    ).toEqual({ extra: [], missing: [] })
  }

  /** The application's writes: inserts, updates that move keys, deletes. */
  const appWrites = async (app: Kysely<any>) => {
    await sql`INSERT INTO orders (customer_id, amount_cents) VALUES (1, 5), (2, 7), (21, 9)`.execute(
      app,
    )
    await sql`INSERT INTO customers VALUES (21, 'region new')`.execute(app)
    await sql`UPDATE orders SET customer_id = 3 WHERE customer_id = 4`.execute(app)
    await sql`UPDATE customers SET region = 'region 9' WHERE id = 5`.execute(app)
    await sql`DELETE FROM orders WHERE customer_id = 6`.execute(app)
  }

  it("captures the application role's writes and applies them as matview's role; the application cannot write targets, logs or the catalog", async () => {
    const mv = await createViews()
    const app = login(role.app).db
    await appWrites(app)
    const second = await mv.update()
    expect(second.views.every((v) => v.outcome === 'done')).toBe(true)
    expect(
      second.views[0]!.updated + second.views[0]!.inserted + second.views[0]!.deleted,
    ).toBeGreaterThan(3)
    await expectEqual()
    await mv.close()

    // The application reads the targets...
    const { rows } = await sql<{
      n: string
    }>`SELECT count(*) AS n FROM reporting.customer_totals`.execute(app)
    expect(Number(rows[0]!.n)).toBeGreaterThan(0)
    // ...and cannot write them, the change logs or the catalog.
    const { rows: ids } = await sql<{
      id: number
    }>`SELECT id FROM matview.views ORDER BY id`.execute(database!.db)
    // The query-mapped source's stage: the application's writes stage rows there with its own
    // rights (INSERT), but it cannot read or delete them.
    const { rows: stages } = await sql<{ name: string }>`
      SELECT relname AS name FROM pg_class
      WHERE relnamespace = 'matview'::regnamespace AND relname LIKE ${`stage_${ids[1]!.id}_%`}`.execute(
      database!.db,
    )
    expect(stages).toHaveLength(1)
    const stage = stages[0]!.name
    const attempts = [
      sql`INSERT INTO reporting.customer_totals VALUES (999, 'x', 1, 1)`,
      sql`UPDATE reporting.customer_totals SET total_cents = 0`,
      sql`DELETE FROM reporting.region_orders`,
      sql`TRUNCATE reporting.customer_totals`,
      sql`INSERT INTO ${sql.id('matview', `log_${ids[0]!.id}`)} (customer_id) VALUES (1)`,
      sql`DELETE FROM ${sql.id('matview', `log_${ids[0]!.id}`)}`,
      sql`INSERT INTO ${sql.id('matview', `inbox_${ids[0]!.id}`)} (customer_id) VALUES ('{1}')`,
      sql`DELETE FROM ${sql.id('matview', `inbox_${ids[0]!.id}`)}`,
      sql`SELECT * FROM ${sql.id('matview', stage)}`,
      sql`DELETE FROM ${sql.id('matview', stage)}`,
      sql`UPDATE matview.views SET state = 'ready'`,
      sql`DELETE FROM matview.runs`,
      sql`INSERT INTO matview.catalog_version VALUES (99, 'x')`,
      sql`DROP TABLE reporting.customer_totals`,
      sql`CREATE TABLE matview.mine (id int)`,
    ]
    for (const attempt of attempts) {
      const failure = await attempt.execute(app).then(
        () => 'succeeded',
        (error: Error) => error.message,
      )
      expect(failure, attempt.compile(app).sql).toMatch(/^(permission denied|must be owner)/)
    }
    await expectEqual()
  })

  it("without event triggers (matview's role is no superuser), the check at each run catches a source replaced and a key column renamed", async () => {
    const mv = await createViews()
    const admin = database!.db
    // PostgreSQL lets only superusers create event triggers: the migration made none.
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM pg_event_trigger`.execute(admin)
    expect(rows[0]!.n).toBe(0)
    const app = login(role.app).db
    // A column region_orders reads its key from: the application's writes fail until the next
    // run stops that capture (docs/reliability.md says so).
    await sql`ALTER TABLE app.customers RENAME COLUMN region TO area`.execute(app)
    await expect(sql`INSERT INTO customers VALUES (30, 'x')`.execute(app)).rejects.toThrow(
      'column "region" does not exist',
    )
    const run = await mv.update()
    const regions = run.views.find((v) => v.view === 'reporting.region_orders')!
    expect(regions.error).toBe(
      'view "reporting.region_orders": needs a rebuild (column region of source app.customers, which the key is read from, was renamed or dropped; its capture was stopped so that writes to the table go on); run "matview rebuild reporting.region_orders"',
    )
    await sql`INSERT INTO customers VALUES (30, 'x')`.execute(app)

    // The application swaps its orders table for a new one: the view fails, it does not drift.
    await sql`CREATE TABLE app.orders_new (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
      amount_cents bigint NOT NULL)`.execute(app)
    await sql`ALTER TABLE app.orders RENAME TO orders_old`.execute(app)
    await sql`ALTER TABLE app.orders_new RENAME TO orders`.execute(app)
    await sql`DROP TABLE app.orders_old`.execute(app)
    const totals = (await mv.status()).find((s) => s.name === 'reporting.customer_totals')!
    expect(totals).toMatchObject({
      state: 'needs_rebuild',
      stateReason:
        'source app.orders was dropped and app.orders is now another table, whose writes were never captured',
    })
    expect((await mv.update()).views[0]!.outcome).toBe('failed')
    await mv.close()
  })

  it('runs none of the functions or operators an attacker puts in the way of the capture triggers', async () => {
    const mv = await createViews()
    // The attacker: a table that records every call, open to everyone, and look-alikes of what a
    // capture trigger (or a careless one) would call, each a better match than pg_catalog's.
    const evil = login(role.evil).db
    await sql`GRANT USAGE ON SCHEMA app TO ${sql.id(role.evil)}`.execute(login(role.app).db)
    await sql`CREATE TABLE public.calls (fn text, by_role text DEFAULT current_user)`.execute(evil)
    await sql`GRANT INSERT, SELECT ON public.calls TO PUBLIC`.execute(evil)
    await sql
      .raw(`
      CREATE FUNCTION public.to_jsonb(r app.orders) RETURNS jsonb LANGUAGE sql AS $$
        INSERT INTO public.calls (fn) VALUES ('to_jsonb(orders)');
        SELECT pg_catalog.row_to_json(r)::jsonb $$;
      CREATE FUNCTION public.to_jsonb(r app.customers) RETURNS jsonb LANGUAGE sql AS $$
        INSERT INTO public.calls (fn) VALUES ('to_jsonb(customers)');
        SELECT pg_catalog.row_to_json(r)::jsonb $$;
      CREATE FUNCTION public.evil_eq(a bigint, b bigint) RETURNS boolean LANGUAGE sql AS $$
        INSERT INTO public.calls (fn) VALUES ('=(bigint, bigint)');
        SELECT a OPERATOR(pg_catalog.=) b $$;
      CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.evil_eq);
      CREATE FUNCTION public.pg_notify(channel text, payload text) RETURNS void LANGUAGE sql AS $$
        INSERT INTO public.calls (fn) VALUES ('pg_notify') $$;
      CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$
        INSERT INTO public.calls (fn) VALUES ('now()');
        SELECT pg_catalog.now() $$;
      CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS $$
        INSERT INTO public.calls (fn) VALUES ('clock_timestamp()');
        SELECT pg_catalog.clock_timestamp() $$;
      CREATE FUNCTION public.format(text, text, text) RETURNS text LANGUAGE sql AS $$
        INSERT INTO public.calls (fn) VALUES ('format');
        SELECT pg_catalog.format($1, $2, $3) $$;
      CREATE TABLE public.new_rows (id bigint, customer_id bigint, amount_cents bigint);
      CREATE TABLE public.old_rows (id bigint, customer_id bigint, amount_cents bigint);
    `)
      .execute(evil)

    const app = login(role.app).db
    // The trap is armed: code that resolves these names through the application's search_path
    // runs the attacker's functions.
    await sql`SELECT to_jsonb(o) FROM orders o LIMIT 1`.execute(app)
    // (pg_catalog is searched first unless the path names it later, as this one does.)
    await app.transaction().execute(async (trx) => {
      await sql`SET LOCAL search_path = public, pg_catalog`.execute(trx)
      await sql`SELECT 1::bigint = 2::bigint`.execute(trx)
    })
    const { rows: armed } = await sql<{ fn: string; by_role: string }>`
      SELECT fn, by_role FROM public.calls ORDER BY fn`.execute(database!.db)
    expect(armed).toEqual([
      { fn: '=(bigint, bigint)', by_role: role.app },
      { fn: 'to_jsonb(orders)', by_role: role.app },
    ])
    await sql`TRUNCATE public.calls`.execute(database!.db)

    // The application writes every way, and TRUNCATEs a table (the truncate marker's trigger).
    await appWrites(app)
    await sql`UPDATE customers SET region = region WHERE id < 3`.execute(app)
    await sql`DELETE FROM customers WHERE id = 21`.execute(app)
    const second = await mv.update()
    expect(second.views.every((v) => v.outcome === 'done')).toBe(true)
    await expectEqual()
    // Nothing the attacker made ran: not in the writer's trigger, not in matview's batches.
    const { rows: calls } = await sql<{ fn: string }>`SELECT fn FROM public.calls`.execute(
      database!.db,
    )
    expect(calls).toEqual([])

    await sql`GRANT TRUNCATE ON app.orders TO ${sql.id(role.app)}`.execute(app)
    await sql`TRUNCATE orders`.execute(app)
    const statuses = await mv.status()
    expect(statuses.map((s) => s.state)).toEqual(['needs_rebuild', 'needs_rebuild'])
    const { rows: after } = await sql<{ fn: string }>`SELECT fn FROM public.calls`.execute(
      database!.db,
    )
    expect(after).toEqual([])
    await mv.close()
  })
  it("runs none of the application's own casts with matview's rights: its enum's cast to json, its row type's casts (audit 03)", async () => {
    const app = login(role.app).db
    // The application owns its types, and the owner of a type may create casts from it.
    await sql
      .raw(`
      CREATE TYPE app.status AS ENUM ('open', 'paid');
      ALTER TABLE app.orders ADD COLUMN status app.status NOT NULL DEFAULT 'paid';
      CREATE TABLE app.calls (fn text, by_role text DEFAULT current_user);
      GRANT INSERT ON app.calls TO PUBLIC;`)
      .execute(app)
    const mv = await createViews()
    // Each records who ran it and, run as matview's role, tries to take the targets.
    const hook = (fn: string) => `
      INSERT INTO app.calls (fn) VALUES ('${fn}');
      IF current_user <> '${role.app}' THEN
        EXECUTE 'GRANT ALL ON reporting.customer_totals, reporting.region_orders TO ${role.app}';
        UPDATE reporting.region_orders SET order_count = -666;
      END IF;`
    await sql
      .raw(`
      CREATE FUNCTION app.status_json(s app.status) RETURNS json LANGUAGE plpgsql AS $$
      BEGIN ${hook('status::json')} RETURN pg_catalog.to_json(s::text); END $$;
      CREATE CAST (app.status AS json) WITH FUNCTION app.status_json(app.status);
      CREATE FUNCTION app.status_jsonb(s app.status) RETURNS jsonb LANGUAGE plpgsql AS $$
      BEGIN ${hook('status::jsonb')} RETURN pg_catalog.to_jsonb(s::text); END $$;
      CREATE CAST (app.status AS jsonb) WITH FUNCTION app.status_jsonb(app.status);
      CREATE FUNCTION app.orders_text(o app.orders) RETURNS text LANGUAGE plpgsql AS $$
      BEGIN ${hook('orders::text')} RETURN 'forged'; END $$;
      CREATE CAST (app.orders AS text) WITH FUNCTION app.orders_text(app.orders);
      CREATE FUNCTION app.orders_json(o app.orders) RETURNS jsonb LANGUAGE plpgsql AS $$
      BEGIN ${hook('orders::jsonb')} RETURN '{}'; END $$;
      CREATE CAST (app.orders AS jsonb) WITH FUNCTION app.orders_json(app.orders);`)
      .execute(app)
    // The trap is armed: the application's own to_jsonb over its rows calls the cast.
    await sql`SELECT to_jsonb(o) FROM app.orders o LIMIT 1`.execute(app)
    const calls = async () =>
      (
        await sql<{ fn: string; by_role: string }>`
          SELECT DISTINCT fn, by_role FROM app.calls ORDER BY fn`.execute(database!.db)
      ).rows
    expect(await calls()).toEqual([{ fn: 'status::json', by_role: role.app }])
    await sql`TRUNCATE app.calls`.execute(database!.db)

    // Ordinary writes, through the capture of both views (region_orders stages whole rows with
    // to_jsonb, which calls the enum's cast: as the application itself, which writes).
    await appWrites(app)
    await sql`UPDATE orders SET status = 'open' WHERE customer_id < 5`.execute(app)
    const second = await mv.update()
    expect(second.views.every((v) => v.outcome === 'done')).toBe(true)
    await expectEqual()
    expect((await calls()).filter((c) => c.by_role !== role.app)).toEqual([])
    const { rows: granted } = await sql<{ update: boolean }>`
      SELECT has_table_privilege(${role.app}, 'reporting.region_orders', 'UPDATE') AS update`.execute(
      database!.db,
    )
    expect(granted).toEqual([{ update: false }])
    await mv.close()
  })

  it('refuses a column map whose conversion the application could take over with a cast of its own type', async () => {
    const app = login(role.app).db
    // An id column of the application's own type: the key (bigint) would be reached by an
    // assignment cast, which the type's owner may create, and which the capture would run.
    await sql
      .raw(`
      CREATE DOMAIN app.customer_ref AS bigint;
      CREATE TYPE app.code AS ENUM ('1', '2');
      CREATE TABLE app.tickets (id int PRIMARY KEY, customer app.customer_ref NOT NULL, code app.code NOT NULL);
      GRANT SELECT, TRIGGER ON app.tickets TO ${role.matview};`)
      .execute(app)
    const byCode = defineView({
      name: 'reporting.tickets_by_code',
      key: ['code'],
      query: sql`SELECT code::text AS code, count(*) AS n FROM app.tickets GROUP BY 1`,
      sources: { 'app.tickets': { code: 'code' } },
    })
    // A domain over the key's own type needs no cast: accepted.
    const byCustomer = defineView({
      name: 'reporting.tickets_by_customer',
      key: ['customer'],
      query: sql`SELECT customer::bigint AS customer, count(*) AS n FROM app.tickets GROUP BY 1`,
      sources: { 'app.tickets': { customer: 'customer' } },
    })
    const mv = await Matview.open({
      database: login(role.matview).url,
      views: [byCode, byCustomer],
    })
    const { views: results } = await mv.update()
    expect(results.map((v) => [v.view, v.outcome])).toEqual([
      ['reporting.tickets_by_code', 'failed'],
      ['reporting.tickets_by_customer', 'done'],
    ])
    expect(results[0]!.error).toMatch(
      /source "app.tickets" maps key column "code" to column "code": converting app.code to text is not a built-in cast.*map a column of the key's type \(text\), or map the source with a SQL query over "changed"/,
    )
    await mv.close()
  })
})
