import {
  type CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type QueryResult,
  type TransactionSettings,
} from 'kysely'
import { UsageError } from '../errors/matview-error.js'

/** A statement's result as PGlite returns it. */
interface PGliteResults {
  rows: unknown[]
  affectedRows?: number
}

/** The transaction handle PGlite's `transaction()` passes to its callback. */
interface PGliteTransaction {
  query(sql: string, params?: unknown[]): Promise<PGliteResults>
  rollback(): Promise<void>
}

/** The part of a PGlite instance this dialect drives (structural, so PGlite loads lazily). */
export interface PGliteClient {
  query(sql: string, params?: unknown[]): Promise<PGliteResults>
  transaction<T>(callback: (tx: PGliteTransaction) => Promise<T>): Promise<T>
  close(): Promise<void>
}

/** An open transaction: PGlite's handle, and how to end it (true: commit). */
interface OpenTransaction {
  tx: PGliteTransaction
  end(commit: boolean): Promise<void>
}

const ISOLATION_LEVELS = new Set([
  'serializable',
  'repeatable read',
  'read committed',
  'read uncommitted',
])
const ACCESS_MODES = new Set(['read only', 'read write'])

/**
 * One of matview's connections on a PGlite instance. PGlite has one session, shared with the
 * application when it hands us its instance, and it serialises single `query()` calls, not
 * transactions: a BEGIN sent as a query of its own would let the application's statements run
 * inside our transaction (rolled back with it, refused once it aborts, or committing our
 * half-done work). So each transaction of ours runs inside PGlite's `transaction()`, which holds
 * its transaction mutex from BEGIN to COMMIT/ROLLBACK; the application's `query()`,
 * `transaction()` and `exec()` wait for it. Between transactions a held connection holds
 * nothing: its statements are autocommit `query()` calls like the application's, so a long run
 * (many batches) lets the application in between batches, and code that holds a connection can
 * still query through the Kysely instance (that query waits only while a transaction is open).
 */
class PGliteConnection implements DatabaseConnection {
  #open: OpenTransaction | undefined

  constructor(private readonly client: PGliteClient) {}

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const on = this.#open?.tx ?? this.client
    const result = await on.query(compiled.sql, [...compiled.parameters])
    return {
      rows: result.rows as R[],
      ...(result.affectedRows ? { numAffectedRows: BigInt(result.affectedRows) } : {}),
    }
  }

  async *streamQuery<R>(
    compiled: CompiledQuery,
    chunkSize = 100,
  ): AsyncIterableIterator<QueryResult<R>> {
    // PGlite has no cursor over its protocol calls: the rows come at once, handed out in chunks.
    const { rows } = await this.executeQuery<R>(compiled)
    for (let at = 0; at < rows.length; at += chunkSize)
      yield { rows: rows.slice(at, at + chunkSize) }
  }

  async begin(settings: TransactionSettings): Promise<void> {
    if (this.#open) throw new UsageError('a transaction is already open on this connection')
    let decide: (commit: boolean) => void = () => {}
    const decided = new Promise<boolean>((resolve) => {
      decide = resolve
    })
    let hand: (tx: PGliteTransaction) => void = () => {}
    const handed = new Promise<PGliteTransaction>((resolve) => {
      hand = resolve
    })
    // PGlite sends BEGIN, runs the callback under its mutex until we decide, then COMMIT (or
    // nothing more after our ROLLBACK). `done` settles only after the decision: a failing
    // BEGIN rejects it before the handle comes, a failing COMMIT when the commit awaits it.
    const done = this.client.transaction(async (tx) => {
      hand(tx)
      if (!(await decided)) await tx.rollback()
    })
    const tx = await Promise.race([handed, done.then(() => handed)])
    this.#open = {
      tx,
      end: async (commit) => {
        decide(commit)
        await done
      },
    }
    const modes: string[] = []
    if (settings.isolationLevel)
      modes.push(`isolation level ${checked(ISOLATION_LEVELS, settings.isolationLevel)}`)
    if (settings.accessMode) modes.push(checked(ACCESS_MODES, settings.accessMode))
    if (modes.length === 0) return
    try {
      await tx.query(`SET TRANSACTION ${modes.join(', ')}`)
    } catch (error) {
      // Kysely does not roll back a transaction whose start failed: let go of the mutex here.
      await this.end(false).catch(() => {})
      throw error
    }
  }

  /** Ends the open transaction, if any (Kysely rolls back after a failed commit: a no-op). */
  async end(commit: boolean): Promise<void> {
    const open = this.#open
    this.#open = undefined
    await open?.end(commit)
  }
}

/** A transaction setting Kysely passed, checked against the words PostgreSQL takes. */
function checked(allowed: Set<string>, value: string): string {
  if (!allowed.has(value)) throw new UsageError(`unsupported transaction setting: ${value}`)
  return value
}

class PGliteDriver implements Driver {
  constructor(private readonly client: PGliteClient) {}

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    return new PGliteConnection(this.client)
  }

  async beginTransaction(conn: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await (conn as PGliteConnection).begin(settings)
  }

  async commitTransaction(conn: DatabaseConnection): Promise<void> {
    await (conn as PGliteConnection).end(true)
  }

  async rollbackTransaction(conn: DatabaseConnection): Promise<void> {
    await (conn as PGliteConnection).end(false)
  }

  async releaseConnection(conn: DatabaseConnection): Promise<void> {
    // A transaction left open (none should be) must not keep PGlite's mutex.
    await (conn as PGliteConnection).end(false)
  }

  async destroy(): Promise<void> {
    await this.client.close()
  }
}

/**
 * A Kysely dialect for PGlite whose transactions hold PGlite's transaction mutex (see
 * {@link PGliteConnection}). `db.destroy()` closes the instance: matview calls it only on
 * instances it opened itself.
 */
export class PGliteDialect implements Dialect {
  constructor(private readonly client: PGliteClient) {}

  createAdapter() {
    return new PostgresAdapter()
  }

  createDriver(): Driver {
    return new PGliteDriver(this.client)
  }

  createQueryCompiler() {
    return new PostgresQueryCompiler()
  }

  createIntrospector(db: Kysely<any>) {
    return new PostgresIntrospector(db)
  }
}
