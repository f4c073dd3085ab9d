import { type Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { queryDifferences } from '../../src/views/query-differences.js'
import { CATALOG_TABLES } from '../support/catalog.js'
import { runCli, writeConfig } from '../support/cli.js'
import { type CliDatabase, useCliDatabase } from '../support/cli-database.js'
import { DIALECTS } from '../support/dialects.js'

// Hostile names through every CLI command (create, update, status, list, history, rebuild,
// drop), as a user would type them. test/engine/identifiers.test.ts covers the engine with
// hostile names in every position (schemas, mapped sources, key values); this adds the CLI:
// names on the command line, in the summary lines and in --json. The canary table x survives.

const DROP = '"; DROP TABLE x; --'
const N = {
  view: DROP,
  byRegion: `Per Rëgion 'r' ☃ ${DROP}`,
  table: `Örders "Q" 'x'${DROP}`,
  id: 'Id "I"',
  customer: `Cüstomer's Id`,
  region: 'Région "R"; --',
  amount: `Ämount 'c' €`,
  total: `Tötal "Cents" ${DROP}`,
}

/** The config: names as data (JSON), reaching SQL only through sql.id. `extra` alters the query. */
function writeHostileConfig(database: CliDatabase, extra = ''): void {
  writeConfig(database.dir, {
    database: database.spec,
    batchSize: 3,
    preamble: `const N = JSON.parse(${JSON.stringify(JSON.stringify(N))})
const id = (name) => sql.id(name)`,
    views: [
      `defineView({
      name: N.view,
      key: [N.customer],
      query: sql\`SELECT \${id(N.customer)}, min(\${id(N.region)}) AS \${id(N.region)},
        sum(\${id(N.amount)}) AS \${id(N.total)} FROM \${id(N.table)} GROUP BY \${id(N.customer)}${extra}\`,
      sources: { [N.table]: { [N.customer]: N.customer } },
      indexes: [[N.region]],
    })`,
      `defineView({
      name: N.byRegion,
      key: [N.region],
      query: sql\`SELECT \${id(N.region)}, count(*) AS n, sum(\${id(N.total)}) AS \${id(N.total)}
        FROM \${id(N.view)} GROUP BY \${id(N.region)}\`,
      sources: { [N.view]: { [N.region]: N.region } },
    })`,
    ],
  })
}

const id = (name: string) => sql.id(name)
const totalsQuery = (extra = '') => sql`
  SELECT ${id(N.customer)}, min(${id(N.region)}) AS ${id(N.region)}, sum(${id(N.amount)}) AS ${id(N.total)}
  FROM ${id(N.table)} GROUP BY ${id(N.customer)}${sql.raw(extra)}`
const regionQuery = sql`
  SELECT ${id(N.region)}, count(*) AS n, sum(${id(N.total)}) AS ${id(N.total)}
  FROM ${id(N.view)} GROUP BY ${id(N.region)}`

async function createTables(db: Kysely<any>): Promise<void> {
  await sql`CREATE TABLE x (id int)`.execute(db)
  await sql`INSERT INTO x VALUES (1)`.execute(db)
  await sql`CREATE TABLE ${id(N.table)} (${id(N.id)} bigserial PRIMARY KEY,
    ${id(N.customer)} text NOT NULL, ${id(N.region)} text NOT NULL, ${id(N.amount)} bigint NOT NULL)`.execute(
    db,
  )
  await sql`INSERT INTO ${id(N.table)} (${id(N.customer)}, ${id(N.region)}, ${id(N.amount)})
    SELECT 'c' || (g % 12) || ${`'"; --`}, (ARRAY[${"north'"}, ${'"south"'}, ${'ünï ☃'}])[1 + g % 12 % 3], g
    FROM generate_series(1, 60) g`.execute(db)
}

describe.each(DIALECTS)('hostile names through the CLI on %s', (dialect) => {
  const database = useCliDatabase(dialect, (database) => database.use(createTables))

  const expectEqual = (extra = '') =>
    database!.use(async (db) => {
      expect(
        await queryDifferences(db, N.view, totalsQuery(extra), [N.customer, N.region, N.total]),
      ).toEqual({ extra: [], missing: [] })
      expect(await queryDifferences(db, N.byRegion, regionQuery, [N.region, 'n', N.total])).toEqual(
        { extra: [], missing: [] },
      )
      const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM x`.execute(db)
      expect(Number(rows[0]!.n)).toBe(1)
    })

  it('creates, updates, reports, rebuilds and drops views with hostile names, and table x survives', async () => {
    const cli = (...args: string[]) => runCli(args, database!.dir)
    writeHostileConfig(database!)

    const list = await cli('list', '--json')
    expect(JSON.parse(list.stdout)).toEqual([
      { name: N.view, kind: 'declarative', dependsOn: [] },
      { name: N.byRegion, kind: 'declarative', dependsOn: [N.view] },
    ])
    const created = await cli('create')
    expect(created.stderr).toBe('')
    expect(created.code).toBe(0)
    expect(created.stdout).toContain(`${N.view}: done (created, backfilled), +12 ~0 -0`)
    expect(created.stdout).toContain(`${N.byRegion}: done (created, backfilled), +3 ~0 -0`)
    await expectEqual()

    await database!.use(async (db) => {
      await sql`UPDATE ${id(N.table)} SET ${id(N.amount)} = ${id(N.amount)} + 1 WHERE ${id(N.id)} % 5 = 0`.execute(
        db,
      )
      await sql`DELETE FROM ${id(N.table)} WHERE ${id(N.customer)} = ${`c3'"; --`}`.execute(db)
      await sql`INSERT INTO ${id(N.table)} (${id(N.customer)}, ${id(N.region)}, ${id(N.amount)})
        VALUES (${`new "'); DROP TABLE x; --`}, ${`west'); DROP TABLE x; --`}, 5)`.execute(db)
    })
    const status = await cli('status', '--json', '--views', N.view)
    expect(status.code).toBe(0)
    expect(JSON.parse(status.stdout)).toMatchObject([
      { name: N.view, state: 'ready', pending: { total: 13 } },
    ])
    const table = await cli('status')
    expect(table.stdout).toContain(N.byRegion)
    const updated = await cli('update', '--views', `${N.view},${N.byRegion}`)
    expect(updated.code, updated.stdout + updated.stderr).toBe(0)
    expect(updated.stdout).toMatch(/\+1 ~11 -1 in 5 batches/)
    await expectEqual()
    const history = await cli('history', N.view, '--json')
    expect(JSON.parse(history.stdout)).toHaveLength(2)

    // A changed definition: refused by update, rebuilt by name, then equal to the new query.
    const HAVING = ' HAVING count(*) > 4'
    writeHostileConfig(database!, HAVING)
    const refused = await cli('update')
    expect(refused.code).toBe(1)
    expect(refused.stdout).toContain(`run "matview rebuild ${N.view}"`)
    const rebuilt = await cli('rebuild', N.view)
    expect(rebuilt.stderr).toBe('')
    expect(rebuilt.code).toBe(0)
    expect(rebuilt.stdout).toContain(`${N.view}: done (1 reading view given the changes, rebuilt)`)
    expect((await cli('update')).code).toBe(0)
    await expectEqual(HAVING)

    // Drop: the reader first (a view read by another is refused), then the view itself.
    const blocked = await cli('drop', N.view)
    expect(blocked.code).toBe(2)
    expect(blocked.stderr).toContain(N.byRegion)
    const dropped = await cli('drop', N.byRegion, N.view)
    expect(dropped.code, dropped.stderr).toBe(0)
    await database!.use(async (db) => {
      const { rows } = await sql<{ n: string }>`
        SELECT (SELECT count(*) FROM matview.views)
             + (SELECT count(*) FROM pg_catalog.pg_trigger WHERE NOT tgisinternal)
             + (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s
                ON s.oid = c.relnamespace WHERE s.nspname = 'matview'
                AND c.relname <> ALL(${[...CATALOG_TABLES]})
                AND c.relkind = 'r') AS n`.execute(db)
      expect(Number(rows[0]!.n)).toBe(0)
      const { rows: canary } = await sql<{ n: string }>`SELECT count(*) AS n FROM x`.execute(db)
      expect(Number(canary[0]!.n)).toBe(1)
      const { rows: left } = await sql<{
        n: string
      }>`SELECT count(*) AS n FROM ${id(N.table)}`.execute(db)
      expect(Number(left[0]!.n)).toBe(56)
    })
  })
})
