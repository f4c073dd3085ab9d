import pg from 'pg'

/** Calls `onMessage` with each notification's payload on `channel`; close to stop. */
export type Listen = (channel: string, onMessage: (payload: string) => void) => Promise<Listener>

export interface Listener {
  close(): Promise<void>
}

/** How long a lost LISTEN connection waits before it connects again. */
const RECONNECT_MS = 2000

/**
 * LISTEN on a connection of its own: a pooled connection would be handed to a batch, and
 * notifications arrive only while the connection is idle in the session that listens. A lost
 * connection reconnects in the background; notifications sent meanwhile are lost, which the
 * worker's poll makes up for.
 */
export function postgresListen(url: string): Listen {
  return async (channel, onMessage) => {
    let client: pg.Client | undefined
    let closed = false
    let timer: NodeJS.Timeout | undefined
    const connect = async (): Promise<void> => {
      const next = new pg.Client({ connectionString: url, application_name: 'matview listen' })
      const retry = () => {
        if (closed || client !== next) return
        client = undefined
        timer = setTimeout(() => void connect().catch(() => {}), RECONNECT_MS)
        timer.unref()
      }
      client = next
      next.on('error', retry)
      next.on('end', retry)
      next.on('notification', (message) => {
        if (message.channel === channel) onMessage(message.payload ?? '')
      })
      try {
        await next.connect()
        await next.query(`LISTEN ${next.escapeIdentifier(channel)}`)
      } catch (error) {
        retry()
        await next.end().catch(() => {})
        throw error
      }
    }
    await connect()
    return {
      close: async () => {
        closed = true
        if (timer) clearTimeout(timer)
        await client?.end().catch(() => {})
      },
    }
  }
}

/**
 * PGlite delivers NOTIFY to `listen()` callbacks in this process. Its `listen()` puts the
 * channel into `LISTEN …` as written, so it is passed quoted (ours holds a colon).
 */
export function pgliteListen(client: {
  listen(channel: string, callback: (payload: string) => void): Promise<() => Promise<void>>
}): Listen {
  return async (channel, onMessage) => {
    const unlisten = await client.listen(`"${channel.replaceAll('"', '""')}"`, onMessage)
    return { close: () => unlisten() }
  }
}
