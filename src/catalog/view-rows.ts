import { type Kysely, sql } from 'kysely'

export type ViewState = 'building' | 'ready' | 'needs_rebuild' | 'rebuilding'

/** A view's row in the catalog. */
export interface ViewRow {
  name: string
  id: number
  kind: 'handwritten' | 'declarative'
  definitionHash: string | null
  state: ViewState
  stateReason: string | null
  backfillCheckpoint: unknown
}

/** Registers a hand-written view the first time it runs (declarative views register at create). */
export async function registerView(
  db: Kysely<any>,
  schema: string,
  view: { name: string; kind: 'handwritten' | 'declarative' },
): Promise<void> {
  await sql`
    INSERT INTO ${sql.id(schema)}.views (name, kind) VALUES (${view.name}, ${view.kind})
    ON CONFLICT (name) DO NOTHING
  `.execute(db)
}

export async function readViewRows(db: Kysely<any>, schema: string): Promise<Map<string, ViewRow>> {
  const { rows } = await sql<
    Record<string, unknown>
  >`SELECT * FROM ${sql.id(schema)}.views`.execute(db)
  return new Map(
    rows.map((row) => [
      String(row.name),
      {
        name: String(row.name),
        id: Number(row.id),
        kind: row.kind as ViewRow['kind'],
        definitionHash: (row.definition_hash as string | null) ?? null,
        state: row.state as ViewState,
        stateReason: (row.state_reason as string | null) ?? null,
        backfillCheckpoint: row.backfill_checkpoint ?? null,
      },
    ]),
  )
}
