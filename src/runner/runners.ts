import { declarativeRunner } from '../engine/declarative-runner.js'
import type { ViewDefinition } from '../views/view-definition.js'
import { handwrittenRunner } from './handwritten-runner.js'
import type { KindRunner } from './kind-runner.js'

const RUNNERS = { handwritten: handwrittenRunner, declarative: declarativeRunner } as const

/** The runner for a kind of view. */
export function runnerFor(kind: ViewDefinition['kind']): KindRunner<any> {
  return RUNNERS[kind]
}
