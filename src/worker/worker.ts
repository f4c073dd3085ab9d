import { setTimeout as sleep } from 'node:timers/promises'
import { sql } from 'kysely'
import { readViewRows } from '../catalog/view-rows.js'
import {
  cleanDeadWorkers,
  deregisterWorker,
  heartbeat,
  registerWorker,
} from '../catalog/workers.js'
import type { ResolvedConfig } from '../config/resolve-config.js'
import type { Database } from '../dialects/connect.js'
import type { Listener } from '../dialects/listen.js'
import { addNotifyToCaptures, NOTIFY_WINDOW_MS, notifyChannel } from '../engine/capture-ddl.js'
import { hasPending } from '../engine/has-pending.js'
import { retireCapture } from '../engine/retire-capture.js'
import { errorMessage } from '../errors/matview-error.js'
import { formatDuration, formatRows } from '../runner/format-counts.js'
import { type Logger, silentLogger } from '../runner/logger.js'
import { runUpdate, selectViews, type ViewResult } from '../runner/update.js'
import type { ViewDefinition } from '../views/view-definition.js'
import { backoffMs, nextDue, type Timing, viewTiming } from './view-timing.js'

export interface WorkerOptions {
  /** Only these views (by name); default all. */
  views?: string[]
  /** How many views run at once (PGlite: always 1, it has one connection). */
  concurrency?: number
  /** How often change-driven views are checked for missed notifications. @defaultValue 5000 */
  pollMs?: number
  /** How long a stop waits for the running batches to finish. @defaultValue 30000 */
  graceMs?: number
  /** How often the worker records that it is alive. @defaultValue 5000 */
  heartbeatMs?: number
  /** Overrides the config's `batchSize`. */
  batchSize?: number
  /**
   * After this many failures in a row, a failing batch is applied in halves and the keys that
   * fail alone are set aside, so the rest of the view proceeds. @defaultValue 3
   */
  isolateAfter?: number
  /** Aborting it stops the worker: no new batches, the running ones finish within `graceMs`. */
  signal?: AbortSignal
  logger?: Logger
  /** Called after each view's run (metrics, tests). */
  onRun?: (result: ViewResult) => void
  /** Called after each batch that committed, with its view and duration (metrics). */
  onBatch?: (view: string, ms: number) => void
}

/** What a stopped worker did, for its last log line. */
export interface WorkerSummary {
  runs: number
  failures: number
  /** Running batches were still going when the grace period ended. */
  graceExceeded: boolean
}

/** The state of one view in the worker. */
interface Slot {
  view: ViewDefinition
  timing: Timing
  /** When it runs next; undefined until a change, a poll or its schedule says so. */
  dueAt: number | undefined
  /** When to ask the database whether it has pending work (change-driven views). */
  checkAt: number | undefined
  running: boolean
  failures: number
  lastError: string | undefined
}

/** Workers whose heartbeat stopped this long ago are deleted from the catalog by live ones. */
const CLEAN_AFTER_SECONDS = 600

/** A live view of a running worker for `/healthz` and metrics. */
export interface WorkerState {
  /** When the loop last went round (ms since the epoch). */
  lastTick: number
  pollMs: number
  /** Views running now. */
  running(): string[]
  /** Consecutive failures and the last error of each failing view. */
  failing(): { view: string; failures: number; error: string | undefined }[]
}

/**
 * Runs views until `signal` aborts: change-driven views when their capture triggers notify (or
 * the poll finds work), the others on their schedule. Each run is an `update` of one view, so
 * it takes the view's lock: several workers, in this process or others, share the views and
 * never run one twice at once. A failing view is retried with backoff; the others go on.
 */
export async function runWorker(
  database: Database,
  config: ResolvedConfig,
  options: WorkerOptions = {},
  onState?: (state: WorkerState) => void,
): Promise<WorkerSummary> {
  const logger = options.logger ?? silentLogger
  const pollMs = options.pollMs ?? 5000
  const graceMs = options.graceMs ?? 30_000
  const heartbeatMs = options.heartbeatMs ?? 5000
  const concurrency = database.adapter.multiProcess ? (options.concurrency ?? 1) : 1
  const stop = options.signal ?? new AbortController().signal
  const { db } = database
  const schema = config.schema

  const now = Date.now()
  const slots = new Map<string, Slot>(
    selectViews(config.views, options.views).map((view) => {
      const timing = viewTiming(view)
      const slot: Slot = {
        view,
        timing,
        // Every view runs once at start: catch up on what changed while no worker ran.
        dueAt: timing.mode === 'change' ? undefined : now,
        checkAt: timing.mode === 'change' ? now : undefined,
        running: false,
        failures: 0,
        lastError: undefined,
      }
      return [view.name, slot]
    }),
  )
  const summary: WorkerSummary = { runs: 0, failures: 0, graceExceeded: false }

  // Wakes the loop early: a notification, a finished run, a stop.
  let wake: () => void = () => {}
  const woken = () =>
    new Promise<void>((resolve) => {
      wake = resolve
    })
  stop.addEventListener('abort', () => wake(), { once: true })

  // Views created before notifications existed get them now.
  const upgraded = await addNotifyToCaptures(db, schema)
  if (upgraded > 0) logger.info(`added change notifications to ${upgraded} capture functions`)
  // Capture a drop, swap or discard left behind (a source held then, a process that died).
  for (const left of await retireCapture(db, schema)) logger.info(`left for a later run: ${left}`)

  const names = new Map<string, string>()
  let loading: Promise<void> | undefined
  // Coalesced: notifications that arrive during a read wait for it instead of starting another.
  const loadNames = () => {
    loading ??= readViewRows(db, schema)
      .then((rows) => {
        for (const row of rows.values()) names.set(String(row.id), row.name)
      })
      .finally(() => {
        loading = undefined
      })
    return loading
  }
  await loadNames()

  const onNotify = (payload: string, reloaded = false) => {
    const name = names.get(payload)
    if (name === undefined) {
      // A view created (or rebuilt) since the names were read: read them again, once. (A
      // rebuild's shadow notifies with its own id until the swap: ignored.)
      if (!reloaded)
        loadNames().then(
          () => onNotify(payload, true),
          () => {},
        )
      return
    }
    const slot = slots.get(name)
    if (slot?.timing.mode !== 'change') return
    const due = Date.now() + slot.timing.debounceMs
    // The first change sets the time; later ones do not push it back (bounded latency).
    if (slot.dueAt === undefined || slot.dueAt > due) slot.dueAt = due
    wake()
  }
  let listener: Listener | undefined
  const hasChangeViews = [...slots.values()].some((s) => s.timing.mode === 'change')
  if (hasChangeViews && database.listen) {
    try {
      listener = await database.listen(notifyChannel(schema), (payload) => onNotify(payload))
      logger.debug(`listening on "${notifyChannel(schema)}"`)
    } catch (error) {
      logger.warn(`cannot LISTEN, polling every ${pollMs}ms instead: ${errorMessage(error)}`)
    }
  } else if (hasChangeViews) {
    logger.info(`no LISTEN on this database: polling every ${pollMs}ms`)
  }

  let workerId = await registerWorker(db, schema)
  await cleanDeadWorkers(db, schema, CLEAN_AFTER_SECONDS).catch(() => 0)
  const running = new Set<Promise<void>>()
  const doing = () =>
    [...slots.values()]
      .filter((s) => s.running)
      .map((s) => s.view.name)
      .join(', ') || null
  const beat = setInterval(() => {
    void (async () => {
      // A worker stalled past the clean limit was deleted by another: register again.
      if (!(await heartbeat(db, schema, workerId, doing())))
        workerId = await registerWorker(db, schema)
      await cleanDeadWorkers(db, schema, CLEAN_AFTER_SECONDS)
    })().catch((error) => logger.warn(`heartbeat failed: ${errorMessage(error)}`))
  }, heartbeatMs)
  beat.unref()

  const state: WorkerState = {
    lastTick: Date.now(),
    pollMs,
    running: () => [...slots.values()].filter((s) => s.running).map((s) => s.view.name),
    failing: () =>
      [...slots.values()]
        .filter((s) => s.failures > 0)
        .map((s) => ({ view: s.view.name, failures: s.failures, error: s.lastError })),
  }
  onState?.(state)

  const launch = (slot: Slot) => {
    slot.running = true
    slot.dueAt = undefined
    const task = runOne(slot).finally(() => {
      slot.running = false
      running.delete(task)
      wake()
    })
    running.add(task)
  }

  const runOne = async (slot: Slot): Promise<void> => {
    const started = Date.now()
    let result: ViewResult | undefined
    try {
      const summary = await runUpdate(database, config, {
        views: [slot.view.name],
        signal: stop,
        isolateFailures: slot.failures >= (options.isolateAfter ?? 3),
        mergeIdleRuns: true,
        logger,
        ...(options.onBatch ? { onBatch: options.onBatch } : {}),
        ...(options.batchSize !== undefined ? { batchSize: options.batchSize } : {}),
      })
      result = summary.views[0]
    } catch (error) {
      result = {
        view: slot.view.name,
        kind: slot.view.kind,
        outcome: 'failed',
        inserted: 0,
        updated: 0,
        deleted: 0,
        batches: 0,
        durationMs: Date.now() - started,
        error: errorMessage(error),
        cause: error,
      }
    }
    if (!result) return
    summary.runs++
    options.onRun?.(result)
    const after = Date.now()
    if (result.outcome === 'failed') {
      summary.failures++
      slot.failures++
      slot.lastError = result.error
      const delay = backoffMs(slot.failures)
      slot.dueAt = after + delay
      logger.error(
        `view "${slot.view.name}" failed (${slot.failures} in a row), retrying in ${(delay / 1000).toFixed(1)}s: ${result.error}`,
      )
      return
    }
    if (slot.failures > 0) logger.info(`view "${slot.view.name}" recovered`)
    slot.failures = 0
    slot.lastError = undefined
    if (result.batches > 0)
      logger.info(
        `view "${slot.view.name}": ${formatRows(result)}, ${formatDuration(result.durationMs)}`,
      )
    const next = nextDue(slot.timing, started)
    if (next !== undefined) slot.dueAt = Math.min(slot.dueAt ?? next, next)
    // A write in the same session within the notify window sent no notification: look once more.
    // Only declarative views have capture triggers that notify; a hand-written view without a
    // schedule is always "pending" to the poll, so a look-again would run it every 150 ms.
    else if (result.outcome !== 'skipped' && slot.view.kind === 'declarative')
      slot.checkAt = after + NOTIFY_WINDOW_MS * 1.5
  }

  let nextPoll = Date.now() + pollMs
  try {
    while (!stop.aborted) {
      const wait = woken()
      state.lastTick = Date.now()
      if (state.lastTick >= nextPoll) {
        nextPoll = state.lastTick + pollMs
        for (const slot of slots.values())
          if (slot.timing.mode === 'change')
            slot.checkAt = Math.min(slot.checkAt ?? Infinity, state.lastTick)
      }
      for (const slot of slots.values()) {
        if (stop.aborted) break
        if (slot.checkAt === undefined || slot.checkAt > Date.now()) continue
        slot.checkAt = undefined
        if (slot.running || slot.dueAt !== undefined) continue
        try {
          const pending =
            slot.view.kind === 'handwritten' || (await hasPending(db, schema, slot.view))
          if (pending) slot.dueAt = Date.now()
        } catch (error) {
          logger.warn(`view "${slot.view.name}": checking for work failed: ${errorMessage(error)}`)
        }
      }
      const due = [...slots.values()]
        .filter((s) => !s.running && s.dueAt !== undefined && s.dueAt <= Date.now())
        .sort((a, b) => a.dueAt! - b.dueAt!)
      for (const slot of due) {
        if (stop.aborted || running.size >= concurrency) break
        launch(slot)
      }
      const times = [nextPoll]
      for (const s of slots.values()) {
        if (s.dueAt !== undefined && !s.running) times.push(s.dueAt)
        if (s.checkAt !== undefined) times.push(s.checkAt)
      }
      const delay = Math.max(0, Math.min(...times) - Date.now())
      if (delay > 0 || running.size >= concurrency) await Promise.race([wait, sleep(delay)])
    }
  } finally {
    // Stop: the running views stop after their current batch (they share the signal).
    if (running.size > 0) {
      logger.info(`stopping: waiting up to ${graceMs / 1000}s for ${doing()} to finish its batch`)
      const finished = await Promise.race([
        Promise.allSettled([...running]).then(() => true),
        sleep(graceMs, false, { ref: false }),
      ])
      summary.graceExceeded = !finished
    }
    clearInterval(beat)
    // Bounded: past the grace period a batch may still hold PGlite's only connection (its
    // transaction holds the instance's lock), which UNLISTEN and the catalog write wait for.
    const bounded = (work: Promise<unknown>) =>
      Promise.race([work.catch(() => {}), sleep(2000, undefined, { ref: false })])
    await bounded(listener?.close() ?? Promise.resolve())
    await bounded(deregisterWorker(db, schema, workerId))
  }
  return summary
}

/** Whether the database answers, for `/healthz`. */
export async function databaseReachable(database: Database, timeoutMs = 2000): Promise<boolean> {
  const probe = sql`SELECT 1`.execute(database.db).then(
    () => true,
    () => false,
  )
  return Promise.race([probe, sleep(timeoutMs, false, { ref: false })])
}
