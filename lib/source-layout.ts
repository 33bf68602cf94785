// Where a described set comes from: the directories it was described from, and which file of them
// each described path is. Its own module, without describe's dependencies: the head's seeder and
// a node's fallback to the source read files through it.
import path from 'node:path'
import { isWithin } from './files.ts'

/**
 * Where each described path is read from. One directory is the set itself; several (`--libs A
 * --libs B`) become top-level directories of the set, named after them (A, B, B-2 on a clash).
 */
export interface SourceLayout {
  readonly dirs: readonly { readonly name: string, readonly dir: string }[]
}

export function layoutOf (dirs: readonly string[]): SourceLayout {
  const roots = dirs.map((d) => path.resolve(d))
  if (roots.length === 1) return { dirs: [{ name: '', dir: roots[0] as string }] }
  const used = new Set<string>()
  return {
    dirs: roots.map((dir) => {
      const base = path.basename(dir)
      let name = base
      for (let i = 2; used.has(name); i++) name = `${base}-${i}`
      used.add(name)
      return { name, dir }
    })
  }
}

/** The source file behind a described path. */
export function sourcePath (layout: SourceLayout, entryPath: string): string {
  for (const { name, dir } of layout.dirs) {
    if (name === '') return path.join(dir, entryPath)
    if (isWithin(name, entryPath)) return path.join(dir, entryPath.slice(name.length))
  }
  throw new Error(`internal: ${entryPath} is outside the source layout`)
}
