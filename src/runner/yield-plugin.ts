import { setImmediate as nextTurn } from 'node:timers/promises'
import type {
  KyselyPlugin,
  PluginTransformQueryArgs,
  PluginTransformResultArgs,
  QueryResult,
  RootOperationNode,
  UnknownRow,
} from 'kysely'

/**
 * Lets the event loop turn after each query of a view's run. PGlite answers in the same thread
 * and its results resolve as promise callbacks, so batches run back to back without the event
 * loop ever reaching SIGINT/SIGTERM (or timers: `--max-time`); one turn per query lets a signal
 * stop the run after its current batch, as on PostgreSQL, where results come by I/O anyway.
 */
export const yieldToEventLoop: KyselyPlugin = {
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return args.node
  },
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    await nextTurn()
    return args.result
  },
}
