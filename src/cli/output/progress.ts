import cliProgress from 'cli-progress'
import type { ProgressEvent } from '../../runner/update.js'
import { formatCount, formatResult } from './format.js'

export interface ProgressReporter {
  onProgress(event: ProgressEvent): void
  stop(): void
}

/**
 * On a terminal, a live bar per view (done / total, rate, ETA) on stderr; elsewhere (cron, CI
 * logs) one plain line per view as it ends, on stdout, so a log holds no control characters.
 */
export function createProgressReporter(options: {
  live: boolean
  write: (line: string) => void
}): ProgressReporter {
  if (!options.live) {
    return {
      onProgress(event) {
        if (event.type === 'end') options.write(formatResult(event.result))
      },
      stop() {},
    }
  }
  const multibar = new cliProgress.MultiBar(
    {
      stream: process.stderr,
      format: '{view} [{bar}] {done}/{all} | {rate}/s | ETA {eta_formatted}',
      barsize: 30,
      hideCursor: true,
      clearOnComplete: false,
      etaBuffer: 20,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  )
  const bars = new Map<string, { bar: cliProgress.SingleBar; started: number }>()
  const width = 24
  const payload = (view: string, done: number, total: number, started: number) => ({
    view: view.length > width ? `${view.slice(0, width - 1)}…` : view.padEnd(width),
    done: formatCount(done),
    all: formatCount(total),
    rate: formatCount(Math.round(done / Math.max(0.001, (Date.now() - started) / 1000))),
  })
  return {
    onProgress(event) {
      if (event.type === 'start') {
        const started = Date.now()
        bars.set(event.view, {
          bar: multibar.create(1, 0, payload(event.view, 0, 0, started)),
          started,
        })
      } else if (event.type === 'progress') {
        const entry = bars.get(event.view)
        if (!entry) return
        entry.bar.setTotal(Math.max(1, event.total))
        entry.bar.update(event.done, payload(event.view, event.done, event.total, entry.started))
      } else {
        const entry = bars.get(event.view)
        entry?.bar.stop()
        if (entry) multibar.remove(entry.bar)
        multibar.log(`${formatResult(event.result)}\n`)
      }
    },
    stop() {
      multibar.stop()
    },
  }
}
