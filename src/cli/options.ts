import { InvalidArgumentError } from 'commander'
import { parseDuration } from '../config/duration.js'

/** Global flags every command takes. */
export interface GlobalOptions {
  config?: string
  database?: string
  schema?: string
  verbose?: boolean
}

export function parsePositiveInt(name: string, max = 1_000_000) {
  return (value: string): number => {
    if (!/^-?\d+$/.test(value.trim()))
      throw new InvalidArgumentError(`${name} must be a whole number, got "${value}"`)
    const n = Number(value)
    if (n < 1) throw new InvalidArgumentError(`${name} must be at least 1, got ${value}`)
    if (n > max) throw new InvalidArgumentError(`${name} must be at most ${max}, got ${value}`)
    return n
  }
}

export function parseDurationFlag(name: string) {
  return (value: string): number => {
    const ms = parseDuration(value)
    if (ms === undefined)
      throw new InvalidArgumentError(
        `${name} must be a duration such as 30s, 5m or 1h, got "${value}"`,
      )
    if (ms === 0)
      throw new InvalidArgumentError(`${name} must be more than 0; leave it out for no limit`)
    return ms
  }
}

/** `a,b` and repeated flags both build a list. */
export function collectList(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
  ]
}
