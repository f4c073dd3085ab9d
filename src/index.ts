// The public API of matview: everything an application or a config file imports.
export { type Kysely, type RawBuilder, sql } from 'kysely'
export { CATALOG_VERSION } from './catalog/migrations.js'
export type { RunCounts, RunOutcome, RunRecord } from './catalog/runs.js'
export type { ViewState } from './catalog/view-rows.js'
export type { WorkerRecord } from './catalog/workers.js'
export { defineConfig, type MatviewConfig } from './config/define-config.js'
export { type LoadConfigOptions, loadConfig } from './config/load-config.js'
export {
  type ConfigOverrides,
  type ResolvedConfig,
  resolveConfig,
} from './config/resolve-config.js'
export { connect, type Database, type DatabaseSpec } from './dialects/connect.js'
export type { DialectAdapter, LockKey } from './dialects/dialect-adapter.js'
export type { DropResult } from './engine/drop-view.js'
export type { Comparison, DriftKeys, DriftKind } from './engine/verify-view.js'
export {
  CatalogVersionError,
  ConfigError,
  ConnectionError,
  type ErrorCode,
  isMatviewError,
  MatviewError,
  StatementError,
  UsageError,
  ViewDefinitionError,
  ViewRunError,
} from './errors/matview-error.js'
export {
  createMatview,
  DEFAULT_STALE_SECONDS,
  Matview,
  status,
  update,
  viewSql,
} from './matview.js'
export type { PendingWork, StopReason } from './runner/kind-runner.js'
export { createConsoleLogger, type Logger, silentLogger } from './runner/logger.js'
export type { RebuildOptions, RebuildResult, RebuildSummary } from './runner/rebuild.js'
export { checkProblem, type ViewStatus } from './runner/status.js'
export type {
  ProgressEvent,
  UpdateOptions,
  UpdateSummary,
  ViewOutcome,
  ViewResult,
} from './runner/update.js'
export type {
  VerifyOptions,
  VerifyOutcome,
  VerifyProgressEvent,
  VerifyResult,
  VerifySummary,
} from './runner/verify.js'
export {
  type DeclarativeView,
  type DeclarativeViewInput,
  defineView,
  type SourceMapping,
} from './views/declarative.js'
export {
  defineHandwrittenView,
  type HandwrittenHooks,
  type HandwrittenView,
  type HandwrittenViewInput,
  MaterializedView,
} from './views/handwritten.js'
export type { ViewContext } from './views/view-context.js'
export type { ViewDefinition } from './views/view-definition.js'
export type { ViewTiming } from './views/view-timing.js'
export type { WorkerOptions, WorkerState, WorkerSummary } from './worker/worker.js'
