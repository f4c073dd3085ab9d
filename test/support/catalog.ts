/**
 * The tables every catalog holds once its migrations ran (not a view's own log or stages).
 * Tests that look for leftovers skip these; a migration that adds a table adds it here.
 */
export const CATALOG_TABLES = [
  'catalog_version',
  'views',
  'view_sources',
  'runs',
  'workers',
  'set_aside',
  'run_partitions',
] as const

/**
 * The functions every catalog holds once its migrations ran (not a view's capture functions):
 * the TRUNCATE marker and the schema watch (src/catalog/schema-watch.ts).
 */
export const CATALOG_FUNCTIONS = [
  'mark_truncated',
  'copy_capture',
  'check_sources',
  'watch_ddl',
  'watch_drop',
] as const
