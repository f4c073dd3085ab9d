import { ViewRunError } from '../errors/matview-error.js'
import type { KindRunner } from '../runner/kind-runner.js'
import type { DeclarativeView } from '../views/declarative.js'

/** Placeholder until the declarative engine lands (issue 3). */
export const declarativeRunner: KindRunner<DeclarativeView> = {
  async run(view) {
    throw new ViewRunError(view.name, 'declarative views are not implemented yet')
  },
  async pending(view) {
    throw new ViewRunError(view.name, 'declarative views are not implemented yet')
  },
}
