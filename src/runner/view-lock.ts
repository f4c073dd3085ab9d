import { setTimeout as sleep } from 'node:timers/promises'
import { type Kysely, sql } from 'kysely'
import { closeStaleRuns } from '../catalog/runs.js'
import type { ViewState } from '../catalog/view-rows.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import type { LockKey } from '../dialects/dialect-adapter.js'
import { claimKeys } from '../engine/apply-batch.js'
import { burstInInbox, chooseRebuild, viewStrategy } from '../engine/choose-strategy.js'
import { planRun } from '../engine/run-plan.js'
import { loadViewRuntime } from '../engine/view-runtime.js'
import { definitionHash } from '../engine/view-sql.js'
import type { DeclarativeView } from '../views/declarative.js'
import type { ViewDefinition } from '../views/view-definition.js'
import type { RunViewOptions } from './update.js'

export type LockMode = 'exclusive' | 'shared'

/**
 * How long a runner waits for the shared lock of a partitioned view held exclusively: often
 * only while another runner's `auto` strategy counts the pending keys.
 */
const SHARED_WAIT_MS = 2000

/**
 * Takes the lock a view's run needs, or returns undefined when another runner has the view.
 *
 * Exclusive, as ever (DESIGN, one writer per view), for everything but one case: a ready
 * declarative view whose change log is split into partitions, about to apply its keys. Its
 * appliers hold the view's lock *shared* and each partition's lock exclusively while they
 * apply it, so several runners apply one view at once and never one partition twice; create,
 * backfill, rebuild, drop and verify --repair keep taking it exclusively, so they never run
 * beside an applier.
 *
 * A runner that finds the view free takes it exclusively first: it alone may close the runs
 * that died while running, and under `auto` it decides, as a whole view's run does, whether the
 * pending keys cost less as a rebuild (then it keeps the exclusive lock and rebuilds). If not,
 * it takes the lock shared and lets the exclusive hold go, with no gap between. A runner that
 * finds the view held waits a little for the shared lock, while the one holding it decides.
 */
export async function acquireViewLock(
  database: Database,
  conn: Kysely<any>,
  config: ResolvedConfig,
  view: ViewDefinition,
  options: RunViewOptions,
): Promise<LockMode | undefined> {
  const { adapter } = database
  const key = { schema: config.schema, name: view.name }
  const strategy = viewStrategy(view, options.strategy ?? config.strategy)
  if (
    view.kind !== 'declarative' ||
    options.createOnly ||
    strategy === 'rebuild' ||
    !(await partitionedAndReady(conn, config.schema, view))
  )
    return (await exclusive(database, conn, key, options)) ? 'exclusive' : undefined

  if (await adapter.tryLock(conn, key)) {
    try {
      // It may have been rebuilt between the look above and the lock.
      if (!(await partitionedAndReady(conn, config.schema, view))) return 'exclusive'
      if (strategy === 'auto' && (await rebuildCheaper(conn, config, view, options)))
        return 'exclusive'
      await closeStaleRuns(conn, config.schema, view.name)
      if (!(await adapter.tryLockShared(conn, key))) return 'exclusive'
    } catch (error) {
      await adapter.unlock(conn, key).catch(() => {})
      throw error
    }
    await adapter.unlock(conn, key)
    return 'shared'
  }
  const deadline = options.wait ? Number.POSITIVE_INFINITY : Date.now() + SHARED_WAIT_MS
  while (true) {
    if (await adapter.tryLockShared(conn, key)) {
      const still = await partitionedAndReady(conn, config.schema, view).catch(async (error) => {
        await adapter.unlockShared(conn, key).catch(() => {})
        throw error
      })
      if (still) return 'shared'
      // A rebuild swapped in a log without partitions meanwhile: a whole view's run.
      await adapter.unlockShared(conn, key)
      return (await exclusive(database, conn, key, options)) ? 'exclusive' : undefined
    }
    if (options.budget.stopReason() || Date.now() >= deadline) return undefined
    await sleep(50)
  }
}

/** The exclusive lock; with `wait`, polled until it is free or the run must stop. */
async function exclusive(
  database: Database,
  conn: Kysely<any>,
  key: LockKey,
  options: RunViewOptions,
): Promise<boolean> {
  if (await database.adapter.tryLock(conn, key)) return true
  if (!options.wait) return false
  options.logger.info(`view "${key.name}": waiting for the runner that holds it`)
  // Polling keeps the wait interruptible by the time budget and by SIGINT/SIGTERM.
  while (!options.budget.stopReason()) {
    await sleep(200)
    if (await database.adapter.tryLock(conn, key)) return true
  }
  return false
}

/** The view's run will apply keys (see run-plan.ts) and its log is split into partitions. */
async function partitionedAndReady(
  db: Kysely<any>,
  catalog: string,
  view: DeclarativeView,
): Promise<boolean> {
  const { rows } = await sql<{ partitions: number; state: ViewState; hash: string | null }>`
    SELECT partitions, state, definition_hash AS hash FROM ${sql.id(catalog, 'views')}
    WHERE name = ${view.name} AND kind = 'declarative'`.execute(db)
  const row = rows[0]
  if (row === undefined || Number(row.partitions) <= 1) return false
  const plan = planRun(
    { view: view.name, state: row.state, sameDefinition: row.hash === definitionHash(db, view) },
    { rebuildOnly: view.strategy === 'rebuild' },
  )
  return plan.action === 'apply'
}

/**
 * `auto`'s choice, as a whole view's run makes it (see `choose-strategy.ts`): only when a full
 * batch is pending can the keys be a large share of the view.
 */
async function rebuildCheaper(
  conn: Kysely<any>,
  config: ResolvedConfig,
  view: DeclarativeView,
  options: RunViewOptions,
): Promise<boolean> {
  const runtime = await loadViewRuntime(conn, config.schema, view)
  if (!runtime) return false
  // As the whole view's run decides (declarative-runner.ts): a burst in the inbox is counted
  // where it waits; otherwise only a full first claim is worth a count.
  if (!burstInInbox(runtime)) {
    const keys = await claimKeys(conn, runtime, options.batchSize, undefined)
    if (keys.length < options.batchSize) return false
  }
  return (await chooseRebuild(conn, runtime, config.rebuildShare)).rebuild
}
