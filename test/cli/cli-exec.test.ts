import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { BIN, CLI_ENV, runCli, writeCustomerTotalsConfig } from '../support/cli.js'
import { useCliDatabase } from '../support/cli-database.js'
import { DIALECTS } from '../support/dialects.js'

// Several CLI processes per test, each starting the database: generous on a loaded machine.
const TIMEOUT = 300_000

/** The demo schema, as a user's seed file: a dollar-quoted function body, comments and a quoted
 * semicolon must not split a statement. */
const SEED = `-- schema
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, region text NOT NULL);
CREATE TABLE orders (
  id bigserial PRIMARY KEY,
  customer_id bigint NOT NULL,
  amount_cents bigint NOT NULL,
  status text NOT NULL /* 'paid' or 'open'; nothing else */
);
CREATE FUNCTION region_of(c bigint) RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
  RETURN (SELECT region FROM customers WHERE id = c);
END
$fn$;
INSERT INTO customers VALUES (1, 'Ann; the first', 'eu'), (2, 'Bob', 'us');
INSERT INTO orders (customer_id, amount_cents, status)
  VALUES (1, 500, 'paid'), (1, 250, 'paid'), (2, 100, 'open');
`

function waitFor(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 180_000
  return (async () => {
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 200))
    }
  })()
}

describe.each(DIALECTS)('matview exec on %s', (dialect) => {
  const database = useCliDatabase(dialect, async (db) => {
    writeCustomerTotalsConfig(db.dir, db.spec)
  })

  it(
    'runs a seed file and prints one line per statement, then a SELECT as a table',
    async () => {
      writeFileSync(join(database.dir, 'seed.sql'), SEED)
      const seeded = await runCli(['exec', '-f', 'seed.sql'], database.dir)
      expect(seeded.stderr).toBe('')
      expect(seeded.code).toBe(0)
      expect(seeded.stdout).toBe(
        'CREATE TABLE\nCREATE TABLE\nCREATE FUNCTION\nINSERT 2\nINSERT 3\n',
      )
      const query = await runCli(
        [
          'exec',
          "SELECT id, name, region_of(id) AS region FROM customers ORDER BY id; SELECT * FROM orders WHERE status = 'none'; UPDATE orders SET status = 'paid' WHERE customer_id = 2",
        ],
        database.dir,
      )
      expect(query.code).toBe(0)
      expect(query.stdout).toBe(
        'id  name            region\n1   Ann; the first  eu\n2   Bob             us\n(2 rows)\n(0 rows)\nUPDATE 1\n',
      )
      const paid = await database.use(
        async (db) =>
          (
            await sql<{
              n: number
            }>`SELECT count(*)::int AS n FROM orders WHERE status = 'paid'`.execute(db)
          ).rows[0]!.n,
      )
      expect(paid).toBe(3)
      // The catalog is neither created nor needed.
      const catalog = await database.use(
        async (db) =>
          (await sql`SELECT 1 FROM pg_namespace WHERE nspname = 'matview'`.execute(db)).rows.length,
      )
      expect(catalog).toBe(0)
      // And the views then work on the tables exec made.
      const update = await runCli(['update'], database.dir)
      expect(update.code).toBe(0)
      const totals = await runCli(
        ['exec', 'SELECT customer_id, total_cents FROM customer_totals ORDER BY 1'],
        database.dir,
      )
      expect(totals.stdout).toBe(
        'customer_id  total_cents\n1            750\n2            100\n(2 rows)\n',
      )
    },
    TIMEOUT,
  )

  it(
    'stops at the first error with one line naming the statement; -1 applies nothing',
    async () => {
      const failed = await runCli(
        [
          'exec',
          'CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nSELECT nosuch FROM a;\nINSERT INTO a VALUES (2)',
        ],
        database.dir,
      )
      expect(failed.code).toBe(1)
      expect(failed.stdout).toBe('CREATE TABLE\nINSERT 1\n')
      expect(failed.stderr.trim()).toBe(
        'matview: statement 3 of 4 (line 3) failed: column "nosuch" does not exist; the 2 before it stay applied',
      )
      const whole = await runCli(
        ['exec', '-1', 'INSERT INTO a VALUES (3); SELECT 1 / 0'],
        database.dir,
      )
      expect(whole.code).toBe(1)
      expect(whole.stderr.trim()).toBe(
        'matview: statement 2 of 2 (line 1) failed: division by zero; nothing was applied (--single-transaction)',
      )
      const inScript = await runCli(
        ['exec', 'BEGIN; INSERT INTO a VALUES (4); SELECT 1 / 0; COMMIT'],
        database.dir,
      )
      expect(inScript.stderr).toMatch(/the transaction begun by statement 1 is rolled back/)
      const ids = await database.use(
        async (db) => (await sql<{ id: number }>`SELECT id FROM a ORDER BY id`.execute(db)).rows,
      )
      expect(ids).toEqual([{ id: 1 }])
    },
    TIMEOUT,
  )

  it(
    'refuses a call without SQL, with both SQL and a file, or a file without statements',
    async () => {
      const none = await runCli(['exec'], database.dir)
      expect(none.code).toBe(2)
      expect(none.stderr.trim()).toBe(
        'matview: give the SQL to run: matview exec "SELECT 1" or matview exec -f file.sql',
      )
      const both = await runCli(['exec', 'SELECT 1', '-f', 'x.sql'], database.dir)
      expect(both.code).toBe(2)
      expect(both.stderr).toMatch(/not both/)
      writeFileSync(join(database.dir, 'empty.sql'), '-- nothing here\n')
      const empty = await runCli(['exec', '-f', 'empty.sql'], database.dir)
      expect(empty.code).toBe(2)
      expect(empty.stderr.trim()).toBe('matview: no SQL statement in empty.sql')
      const missing = await runCli(['exec', '-f', 'nosuch.sql'], database.dir)
      expect(missing.code).toBe(2)
      expect(missing.stderr).toMatch(/^matview: cannot read nosuch\.sql: ENOENT/)
    },
    TIMEOUT,
  )

  it(
    'read-only commands while a worker runs: PostgreSQL answers them, PGlite says how to get the answer',
    async () => {
      writeFileSync(join(database.dir, 'seed.sql'), SEED)
      expect((await runCli(['exec', '-f', 'seed.sql'], database.dir)).code).toBe(0)
      expect((await runCli(['update'], database.dir)).code).toBe(0)
      const worker: ChildProcess = spawn(process.execPath, [BIN, 'worker', '--poll', '1s'], {
        cwd: database.dir,
        env: CLI_ENV,
      })
      let workerErr = ''
      worker.stderr?.on('data', (d) => (workerErr += d))
      const exited = new Promise<number | null>((done) => worker.on('exit', (code) => done(code)))
      try {
        if (dialect === 'pglite') {
          await waitFor(
            () => existsSync(join(database.dir, 'db.lock')),
            'the worker to lock the database',
          )
          const status = await runCli(['status'], database.dir)
          expect(status.code).toBe(2)
          const line = status.stderr.trim()
          expect(line.split('\n')).toHaveLength(1)
          expect(line).toMatch(
            /^matview: the embedded database at .*db is in use by another matview process \(pid \d+\)/,
          )
          expect(line).toMatch(/status cannot read it until that process stops/)
          expect(line).toMatch(
            /--metrics-port serves each view's pending keys, lag and last success at \/metrics/,
          )
          expect(line).toMatch(/kill -INT/)
          const history = await runCli(['history', 'customer_totals'], database.dir)
          expect(history.code).toBe(2)
          expect(history.stderr).toMatch(/history cannot read it until that process stops/)
          const exec = await runCli(['exec', 'SELECT 1'], database.dir)
          expect(exec.code).toBe(2)
          expect(exec.stderr).toMatch(/stop that process first/)
          // list needs no database.
          const list = await runCli(['list'], database.dir)
          expect(list.code).toBe(0)
          expect(list.stdout).toMatch(/customer_totals/)
        } else {
          await waitFor(
            async () => (await runCli(['status'], database.dir)).stdout.includes('alive'),
            'the worker to register',
          )
          const status = await runCli(['status'], database.dir)
          expect(status.code).toBe(0)
          expect(status.stdout).toMatch(/customer_totals/)
          const history = await runCli(['history', 'customer_totals'], database.dir)
          expect(history.code).toBe(0)
          const exec = await runCli(
            ['exec', 'SELECT count(*) AS n FROM customer_totals'],
            database.dir,
          )
          expect(exec.stdout).toBe('n\n1\n(1 row)\n') // only customer 1 has paid orders
        }
      } finally {
        worker.kill('SIGINT')
        // A worker stopped by a signal ends its batches and exits 0.
        expect(await exited, workerErr).toBe(0)
      }
      // Once the worker is gone, the embedded database answers again.
      expect((await runCli(['status'], database.dir)).code).toBe(0)
    },
    TIMEOUT,
  )
})
