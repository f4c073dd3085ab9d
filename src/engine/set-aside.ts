import { type Kysely, sql } from 'kysely'
import { applyKeys, type BatchCounts, inboxMoveLock } from './apply-batch.js'
import { KeyError } from './key-error.js'
import { describeKey, keyIn } from './key-sql.js'
import { tableRef } from './names.js'
import { postgresError } from './postgres-errors.js'
import type { ViewRuntime } from './view-runtime.js'

/**
 * Poison keys: a key whose recompute fails (the query raises for its rows, a constraint of the
 * target refuses them) fails every batch it is in, and so the whole view. After repeated
 * failures the worker applies the batch in halves until each failing key is alone, and sets
 * those keys aside in the catalog (`set_aside`) so the rest of the view proceeds. `status`
 * shows them; `matview retry NAME` puts them back in the change log. A new write to such a key
 * logs it again, so a fixed row is retried on its own.
 *
 * A key is set aside only when its failure is a data error (see isDataError) *and* some other
 * key of the batch was applied: a failure of every half says nothing about the keys (a lock
 * held on the target, a column dropped from a source fail each key the same way), so then the
 * first error is thrown, nothing is set aside, and the keys stay in the log.
 */
export async function applyIsolating(
  db: Kysely<any>,
  catalog: string,
  view: ViewRuntime,
  keys: string[][],
  onSetAside: (key: string[], error: string) => void,
): Promise<BatchCounts> {
  const total: BatchCounts = { inserted: 0, updated: 0, deleted: 0, cleared: 0 }
  const add = (counts: BatchCounts) => {
    total.inserted += counts.inserted
    total.updated += counts.updated
    total.deleted += counts.deleted
    total.cleared! += counts.cleared ?? 0
  }
  const failed: { key: string[]; error: unknown }[] = []
  let applied = 0
  const apply = async (part: string[][]): Promise<void> => {
    try {
      const counts = await applyKeys(db, view, part)
      applied += part.length
      add(counts)
    } catch (error) {
      if (!isDataError(error)) throw error
      if (part.length === 1) {
        failed.push({ key: part[0]!, error })
        return
      }
      const half = Math.ceil(part.length / 2)
      await apply(part.slice(0, half))
      await apply(part.slice(half))
    }
  }
  await apply(keys)
  if (failed.length === 0) return total
  if (applied === 0) throw failed[0]!.error
  for (const { key, error } of failed) {
    const message = error instanceof Error ? error.message : String(error)
    const outcome = await setAsideKey(db, catalog, view, key, message)
    if (outcome.counts) add(outcome.counts)
    if (outcome.setAside) onSetAside(key, message)
  }
  return total
}

/**
 * SQLSTATE classes a key's own rows can cause: the query raising on them (data exceptions such
 * as a division by zero or a bad cast, a scalar subquery returning two rows, a RAISE or ASSERT
 * in a function it calls) or the target refusing them (a constraint). Everything else says
 * nothing about the keys: a lock or statement timeout and a cancellation (55, 57), a missing
 * column, table or privilege (42), a lost connection (08), a serialization failure (40), a
 * transaction or server state (25, 53, 58, XX).
 */
const DATA_ERROR_CLASSES = new Set([
  '21', // cardinality violation: a subquery returned more than one row for this key
  '22', // data exception
  '23', // integrity constraint violation
  '27', // triggered data change violation
  '2F', // SQL routine exception
  '38', // external routine exception
  '39', // external routine invocation exception
  '44', // WITH CHECK OPTION violation
  'P0', // PL/pgSQL: RAISE, no data found, too many rows, ASSERT
])

/** Whether an error came from the data of the keys being applied (see DATA_ERROR_CLASSES). */
export function isDataError(error: unknown): boolean {
  // Our own: the query returned a duplicate or NULL key for these keys.
  if (error instanceof KeyError) return true
  const cause = error instanceof Error ? error.cause : undefined
  const code = (postgresError(error) ?? postgresError(cause))?.code
  if (!code) return false
  return DATA_ERROR_CLASSES.has(code.slice(0, 2))
}

/**
 * Sets a key aside, unless it now applies: returns whether it was set aside. In one
 * transaction that holds the inbox's move lock, the key is applied once more (under a
 * savepoint), and only if that fails again with a data error are its log rows deleted. The
 * lock matters for a partitioned view: another runner moves the whole inbox, so a new write
 * for this key (one that may fix its row) could reach its log after the failed attempts; it
 * was then deleted with the key's older rows and the key set aside without being tried after
 * it. Under the lock no move commits between this last attempt and the delete, so every log row
 * deleted was seen by a failed attempt.
 */
export async function setAsideKey(
  db: Kysely<any>,
  catalog: string,
  view: ViewRuntime,
  key: string[],
  error: string,
): Promise<{ setAside: boolean; counts?: BatchCounts }> {
  const asObject = JSON.stringify(Object.fromEntries(view.key.map((k, i) => [k, key[i]])))
  return db.transaction().execute(async (trx) => {
    await sql`SELECT 1 FROM ${inboxMoveLock(view)} AS l`.execute(trx)
    await sql`SAVEPOINT matview_last_try`.execute(trx)
    try {
      const counts = await applyKeys(trx, view, [key])
      return { setAside: false, counts }
    } catch (failure) {
      if (!isDataError(failure)) throw failure
      await sql`ROLLBACK TO SAVEPOINT matview_last_try`.execute(trx)
    }
    await sql`DELETE FROM ${tableRef(view.objects.log)} AS l WHERE ${keyIn(view.key, 'l', [key])}`.execute(
      trx,
    )
    await sql`
      INSERT INTO ${sql.id(catalog, 'set_aside')} (view, key, error)
      VALUES (${view.name}, ${asObject}::jsonb, ${error})
      ON CONFLICT (view, key) DO UPDATE SET error = excluded.error, set_aside_at = now()`.execute(
      trx,
    )
    return { setAside: true }
  })
}

/** The keys set aside per view. */
export async function countSetAside(
  db: Kysely<any>,
  catalog: string,
): Promise<Map<string, number>> {
  const { rows } = await sql<{ view: string; n: number }>`
    SELECT view, count(*)::int AS n FROM ${sql.id(catalog, 'set_aside')} GROUP BY view`.execute(db)
  return new Map(rows.map((r) => [r.view, Number(r.n)]))
}

/** Puts a view's set-aside keys back in its change log; returns how many. */
export async function retrySetAside(
  db: Kysely<any>,
  catalog: string,
  view: ViewRuntime,
): Promise<number> {
  const log = tableRef(view.objects.log)
  const cols = sql.join(view.key.map((k) => sql.id(k)))
  const fromRecord = sql.join(view.key.map((k) => sql.id('r', k)))
  return db.transaction().execute(async (trx) => {
    // jsonb_populate_record casts each text value to the log column's type.
    const { rows } = await sql<{ n: number }>`
      WITH moved AS (
        DELETE FROM ${sql.id(catalog, 'set_aside')} WHERE view = ${view.name} RETURNING key
      ), logged AS (
        INSERT INTO ${log} (${cols})
        SELECT ${fromRecord} FROM moved, jsonb_populate_record(NULL::${log}, moved.key) AS r
        RETURNING 1
      )
      SELECT count(*)::int AS n FROM logged`.execute(trx)
    return Number(rows[0]?.n ?? 0)
  })
}

/** `(customer_id)=(5)` for a set-aside key, for messages. */
export function describeSetAside(view: ViewRuntime, key: string[]): string {
  return describeKey(view.key, key)
}
