import { ViewDefinitionError } from '../errors/matview-error.js'
import type { ViewDefinition } from '../views/view-definition.js'

/**
 * The views a view depends on: hand-written views say so in `dependsOn`; a declarative view
 * depends on every view whose target is one of its sources.
 */
export function dependenciesOf(view: ViewDefinition, all: readonly ViewDefinition[]): string[] {
  if (view.kind === 'handwritten') return view.dependsOn ?? []
  const targets = new Map(
    all.filter((v) => v.kind === 'declarative').map((v) => [unqualified(v.name), v.name]),
  )
  const deps: string[] = []
  for (const source of Object.keys(view.sources)) {
    const dep = all.some((v) => v.name === source) ? source : targets.get(unqualified(source))
    if (dep && dep !== view.name) deps.push(dep)
  }
  return deps
}

function unqualified(name: string): string {
  return name.includes('.') ? name.slice(name.lastIndexOf('.') + 1) : name
}

/** Orders views so every view comes after the views it reads; a cycle is a definition error. */
export function orderViews(views: readonly ViewDefinition[]): ViewDefinition[] {
  const byName = new Map(views.map((v) => [v.name, v]))
  const ordered: ViewDefinition[] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (view: ViewDefinition, path: string[]) => {
    const seen = state.get(view.name)
    if (seen === 'done') return
    if (seen === 'visiting') {
      const cycle = [...path.slice(path.indexOf(view.name)), view.name].join(' -> ')
      throw new ViewDefinitionError(view.name, `views depend on each other in a cycle: ${cycle}`)
    }
    state.set(view.name, 'visiting')
    for (const dep of dependenciesOf(view, views)) {
      const target = byName.get(dep)
      if (!target) {
        throw new ViewDefinitionError(
          view.name,
          `depends on "${dep}", which is not a view in the config`,
        )
      }
      visit(target, [...path, view.name])
    }
    state.set(view.name, 'done')
    ordered.push(view)
  }
  for (const view of views) visit(view, [])
  return ordered
}
