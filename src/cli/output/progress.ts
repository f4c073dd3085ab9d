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
  // Views run one after the other, so one bar at a time: it stays on screen when its view ends,
  // followed by the view's result line.
  const bars = new Map<string, { bar: cliProgress.SingleBar; started: number }>()
  const width = 24
  const payload = (view: string, done: number, total: number, started: number) => ({
    view: view.length > width ? `${view.slice(0, width - 1)}…` : view.padEnd(width),
    done: formatCount(done),
    all: formatCount(total),
    rate: formatCount(Math.round(done / Math.max(0.001, (Date.now() - started) / 1000))),
  })
  const stopAll = () => {
    for (const { bar } of bars.values()) bar.stop()
    bars.clear()
  }
  return {
    onProgress(event) {
      if (event.type === 'start') {
        const started = Date.now()
        const bar = new cliProgress.SingleBar(
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
        bar.start(1, 0, payload(event.view, 0, 0, started))
        bars.set(event.view, { bar, started })
      } else if (event.type === 'progress') {
        const entry = bars.get(event.view)
        if (!entry) return
        entry.bar.setTotal(Math.max(1, event.total))
        entry.bar.update(event.done, payload(event.view, event.done, event.total, entry.started))
      } else {
        stopAll()
        options.write(formatResult(event.result))
      }
    },
    stop: stopAll,
  }
}
