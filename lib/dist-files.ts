// What scripts/build.ts compiles into dist/ beside the bundle, and where that is from whichever
// runs: the bundle (dist/cli-bundle.js) or the sources (this file is in lib/). Apart from
// native.ts, which loads the addon when imported: a rank's step needs only a path.
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The Node-API addon: the FUSE server, the socket low-water mark, _exit (native/). */
export const NATIVE_FILE = 'p2prun-native.node'
/** The LD_AUDIT module ranks load (native/audit.c). */
export const AUDIT_FILE = 'p2prun-audit.so'
/** The rank step of every rank but a node's first, without Node (native/rank-step.c; bin/p2prun-rank runs it). */
export const RANK_STEP_FILE = 'p2prun-rank-step'
/** The native node agent: `p2prun mount` and a launch's node agent without Node (native/agent/). */
export const NATIVE_AGENT_FILE = 'p2prun-agent'

export function distFile (name: string): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  return path.join(path.basename(here) === 'dist' ? here : path.join(here, '../dist'), name)
}

/** distFile, if this installation has it (a tree never built has none). */
export function builtDistFile (name: string): string | undefined {
  const file = distFile(name)
  return existsSync(file) ? file : undefined
}
