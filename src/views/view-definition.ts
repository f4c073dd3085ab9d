import type { DeclarativeView } from './declarative.js'
import type { HandwrittenView } from './handwritten.js'

/** Any view matview can run. */
export type ViewDefinition = HandwrittenView | DeclarativeView
