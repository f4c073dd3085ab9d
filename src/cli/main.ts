#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { CommanderError } from 'commander'
import { EXIT, exitCodeFor, formatError } from './exit-codes.js'
import { createProgram } from './program.js'

const { version } = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
) as { version: string }

async function main(argv: string[]): Promise<number> {
  const program = createProgram(version)
  try {
    await program.parseAsync(argv)
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and --version end with code 0; commander has printed its own message otherwise.
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage
    }
    console.error(formatError(error, argv.includes('--verbose') || argv.includes('-v')))
    return exitCodeFor(error)
  }
}

// Exit explicitly: a database pool or the embedded database must not keep a cron job alive.
main(process.argv).then((code) => process.exit(code))
