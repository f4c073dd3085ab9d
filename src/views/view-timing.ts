/**
 * When the worker (`matview worker`) updates a view. At most one of `schedule`, `every` and
 * `onChange`; none means on change. `update` ignores them: it runs when it is called.
 */
export interface ViewTiming {
  /** Cron syntax, e.g. `'*\/5 * * * *'` (5 fields; a 6th leading field is seconds). */
  schedule?: string
  /** A fixed interval: `'30s'`, `'5m'`, or milliseconds. */
  every?: string | number
  /**
   * After a write to a source (declarative views: the capture triggers notify the worker; a
   * poll is the safety net). `debounce` waits this long after the first change, so a burst of
   * writes is applied in one run. Hand-written views have no capture: they run at each poll.
   * @defaultValue `{ debounce: '250ms' }`
   */
  onChange?: boolean | { debounce?: string | number }
  /** The freshness target: `status` marks the view when its oldest pending change is older. */
  maxLag?: string | number
}
