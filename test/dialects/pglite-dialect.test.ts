import { PGlite } from '@electric-sql/pglite'
import { Kysely, sql } from 'kysely'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { connect } from '../../src/dialects/connect.js'
import { PGliteDialect } from '../../src/dialects/pglite-dialect.js'

// matview's Kysely dialect for PGlite, against the application's own statements on the same
// instance. PGlite only: PostgreSQL gives each connection a session of its own, so there is
// nothing to share there (test/dialects/shared-instance.test.ts runs the end-to-end checks on both).

describe('the PGlite dialect, on an instance the application also uses', () => {
  let pg: PGlite
  let db: Kysely<any>
  let template: PGlite
  // Starting PGlite costs seconds; cloning a started one a fraction of that.
  beforeAll(async () => {
    template = await PGlite.create()
    await template.exec('CREATE TABLE t (id int PRIMARY KEY, v int)')
  })
  beforeEach(async () => {
    pg = (await template.clone()) as PGlite
    db = new Kysely<any>({ dialect: new PGliteDialect(pg as never) })
  })
  afterEach(async () => {
    await db.destroy()
  })

  const count = async () =>
    (await pg.query<{ n: number }>('SELECT count(*)::int AS n FROM t')).rows[0]!.n

  it('holds the application out of an open transaction until it commits', async () => {
    let seen: number | undefined
    await db.transaction().execute(async (trx) => {
      await sql`INSERT INTO t VALUES (1, 1)`.execute(trx)
      // Issued while the transaction is open: it must wait, not run inside it.
      void count().then((n) => {
        seen = n
      })
      for (let i = 2; i <= 5; i++) await sql`INSERT INTO t VALUES (${i}, 1)`.execute(trx)
      expect(seen).toBeUndefined()
    })
    await count()
    expect(seen).toBe(5)
  })

  it('keeps the application’s write when its own transaction rolls back, and refuses it nothing', async () => {
    let appWrite: Promise<unknown> | undefined
    await expect(
      db.transaction().execute(async (trx) => {
        await sql`INSERT INTO t VALUES (1, 1)`.execute(trx)
        appWrite = pg.query('INSERT INTO t VALUES (100, 0)')
        await sql`SELECT 1 / 0`.execute(trx)
      }),
    ).rejects.toThrow(/division by zero/)
    await appWrite
    expect((await pg.query('SELECT id FROM t')).rows).toEqual([{ id: 100 }])
  })

  it('lets the application in between the statements of a held connection, and allows nested use', async () => {
    const order: string[] = []
    await db.connection().execute(async (conn) => {
      await sql`INSERT INTO t VALUES (1, 1)`.execute(conn)
      const app = pg.query('INSERT INTO t VALUES (2, 2)').then(() => order.push('application'))
      await sql`INSERT INTO t VALUES (3, 3)`.execute(conn)
      // A query through the Kysely instance while the connection is held does not wait for it.
      const { rows } = await sql<{ n: number }>`SELECT count(*)::int AS n FROM t`.execute(db)
      order.push('nested')
      await app
      await conn.transaction().execute(async (trx) => {
        await sql`INSERT INTO t VALUES (4, ${rows[0]!.n})`.execute(trx)
      })
    })
    expect(order).toContain('nested')
    expect(await count()).toBe(4)
  })

  it('applies the isolation level and access mode Kysely asks for', async () => {
    const { rows } = await db
      .transaction()
      .setIsolationLevel('serializable')
      .setAccessMode('read only')
      .execute((trx) =>
        sql<{
          i: string
          r: string
        }>`SELECT current_setting('transaction_isolation') AS i, current_setting('transaction_read_only') AS r`.execute(
          trx,
        ),
      )
    expect(rows).toEqual([{ i: 'serializable', r: 'on' }])
  })

  it('reports a failing COMMIT and lets go of the instance', async () => {
    await pg.exec(
      `CREATE TABLE d (id int, CONSTRAINT d_unique UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)`,
    )
    await expect(
      db.transaction().execute(async (trx) => {
        await sql`INSERT INTO d VALUES (1), (1)`.execute(trx)
      }),
    ).rejects.toThrow(/d_unique/)
    // Nothing stayed open: the application's next statement runs, outside any transaction.
    await pg.query('INSERT INTO t VALUES (1, 1)')
    expect(await count()).toBe(1)
    expect((await pg.query('SELECT count(*)::int AS n FROM d')).rows).toEqual([{ n: 0 }])
  })

  it('gives two Matview connections on one instance the same view locks', async () => {
    // A worker and an update, say, each with its own Matview on the application's instance.
    const one = await connect(pg as never)
    const two = await connect(pg as never)
    const key = { schema: 'matview', name: 'customer_totals' }
    expect(await one.adapter.tryLock(one.db, key)).toBe(true)
    expect(await two.adapter.tryLock(two.db, key)).toBe(false)
    await one.adapter.unlock(one.db, key)
    expect(await two.adapter.tryLock(two.db, key)).toBe(true)
  })
})
