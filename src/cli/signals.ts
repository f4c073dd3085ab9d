import { EXIT } from './exit-codes.js'

/**
 * SIGINT/SIGTERM stop the run gracefully: the current batch commits or rolls back, the run is
 * recorded as interrupted, locks are released. A second signal exits at once; the open batch
 * rolls back with its connection and its work stays pending.
 */
export interface ShutdownHandle {
  readonly signal: AbortSignal
  /** The exit code for the signal received, if one was. */
  exitCode(): number | undefined
  dispose(): void
}

export function handleShutdownSignals(onFirst: (signal: NodeJS.Signals) => void): ShutdownHandle {
  const controller = new AbortController()
  let received: NodeJS.Signals | undefined
  const handler = (signal: NodeJS.Signals) => {
    if (received) process.exit(signal === 'SIGINT' ? EXIT.sigint : EXIT.sigterm)
    received = signal
    onFirst(signal)
    controller.abort(new Error(`received ${signal}`))
  }
  process.on('SIGINT', handler)
  process.on('SIGTERM', handler)
  return {
    signal: controller.signal,
    exitCode: (): number | undefined =>
      received === undefined ? undefined : received === 'SIGINT' ? EXIT.sigint : EXIT.sigterm,
    dispose: () => {
      process.off('SIGINT', handler)
      process.off('SIGTERM', handler)
    },
  }
}
