// What a launch serves, and how ranks find it in the mount. Two shapes:
// - `--libs DIR…` alone: the directories as they are (one is the set; several its top directories);
// - `--libs auto` (the default when no directory is given), with or without directories: the
//   program's load closure (program-set.ts) and the directories, each at its absolute path in the
//   set, so every path the loader meets names the same file under the mount.
import { existsSync } from 'node:fs'
import path from 'node:path'
import { describeLayout, describeMirror, type DescribeOptions } from '../describe.ts'
import type { Description } from '../description.ts'
import type { JobSpec } from './job-spec.ts'
import { AUTO_LIBS, type LibsPolicy } from '../config.ts'
import { programSet, type Choice } from '../program-set.ts'
import { layoutOf, type SourceLayout } from '../source-layout.ts'
import { isWithin, programFile } from '../files.ts'
import { loadClosure } from '../load-closure.ts'
import { sourceError } from '../errors.ts'


export interface LaunchSet {
  readonly desc: Description
  readonly layout: SourceLayout
  /** The job spec's part that says where things are in the mount. */
  readonly placement: Pick<JobSpec, 'libDirs' | 'program' | 'pythonPath' | 'redirect'>
  /** What the closure held and why each was (not) served; empty without `auto`. */
  readonly choices: readonly Choice[]
  /** Libraries of the set the loader would take from elsewhere (explicit directories only): one line each. */
  readonly warnings: readonly string[]
}

export async function launchSet (libs: readonly string[], program: string, policy: LibsPolicy,
  options: { env: NodeJS.ProcessEnv, cwd: string, describe?: DescribeOptions }): Promise<LaunchSet> {
  const dirs = libs.filter((l) => l !== AUTO_LIBS).map((d) => path.resolve(options.cwd, d))
  if (!libs.includes(AUTO_LIBS)) {
    const layout = layoutOf(dirs)
    const desc = await describeLayout(layout, options.describe)
    return { desc, layout, placement: { libDirs: layout.dirs.map((d) => d.name) }, choices: [], warnings: await bypasses(program, dirs, options) }
  }
  const set = await programSet(program, policy, { env: options.env, cwd: options.cwd })
  if (set.files.length === 0 && set.pythonDirs.length === 0 && dirs.length === 0) {
    throw sourceError(`nothing to serve: everything ${program} loads lies in system directories on local file systems`,
      'launch it without p2prun, or pass --libs-policy all or --libs DIR')
  }
  // Python's package directories are copied in as they are: environments are full of absolute links.
  const trees = [...dirs.map((dir) => ({ dir, followSymlinks: options.describe?.followSymlinks })), ...set.pythonDirs.map((dir) => ({ dir, followSymlinks: true }))]
  const { desc, layout } = await describeMirror(set.files, trees, { ...options.describe, name: options.describe?.name ?? path.basename(set.program) })
  const inMount = (abs: string) => abs.slice(1)
  const whole = [...dirs, ...set.pythonDirs]
  const audit = auditable(set.loader)
  return {
    desc,
    layout,
    placement: {
      libDirs: [...new Set([...dirs, ...set.libDirs])].map(inMount),
      ...(set.execFromMount ? { program: inMount(set.program) } : {}),
      ...(set.pythonDirs.length > 0 ? { pythonPath: set.pythonDirs.map(inMount) } : {}),
      // Whole directories answer every lookup in them; of the others only some files are served.
      ...(audit.ok ? { redirect: { whole, some: [...new Set(set.files.map((f) => path.dirname(f)))].filter((d) => !whole.some((w) => isWithin(w, d))) } } : {})
    },
    choices: set.choices,
    warnings: audit.warning ? [audit.warning] : []
  }
}

/**
 * Whether ranks can load p2prun's audit module: glibc's loader takes LD_AUDIT; a static program
 * has no loader (and nothing to redirect); another loader ignores the variable, so what only the
 * module would redirect goes where it points, and the launch says so. musl's searches
 * LD_LIBRARY_PATH before DT_RPATH: only its absolute dlopen loads escape the mount.
 */
function auditable (loader: string | undefined): { ok: boolean, warning?: string } {
  if (loader === undefined) return { ok: false }
  if (/^ld-linux|^ld64\.so|^ld\.so/.test(path.basename(loader))) return { ok: true }
  if (/^ld-musl-/.test(path.basename(loader))) {
    return { ok: false, warning: `the program's loader ${loader} (musl) takes no LD_AUDIT modules: libraries it loads by absolute path (dlopen) come from their original place (hint: load them by name, from a directory on LD_LIBRARY_PATH)` }
  }
  return { ok: false, warning: `the program's loader ${loader} takes no LD_AUDIT modules: libraries found through DT_RPATH or loaded by absolute path come from their original place (hint: put their directories on LD_LIBRARY_PATH)` }
}

/**
 * With explicit directories the mount reaches the loader through LD_LIBRARY_PATH only, and
 * DT_RPATH is searched before it: a library the set holds can still load from where the binary's
 * RPATH points, from the shared file system, silently. The closure (found as the loader finds it,
 * with the directories first on LD_LIBRARY_PATH, as ranks will have them) says where that happens.
 * A program whose closure cannot be read (a script, a missing library) gets no warning.
 */
async function bypasses (program: string, dirs: readonly string[], options: { env: NodeJS.ProcessEnv, cwd: string }): Promise<string[]> {
  const file = await programFile(program, options.env, options.cwd)
  if (!file) return []
  const libraryPath = [...dirs, ...(options.env.LD_LIBRARY_PATH ? [options.env.LD_LIBRARY_PATH] : [])].join(':')
  const closure = await loadClosure(file, { env: { ...options.env, LD_LIBRARY_PATH: libraryPath }, cwd: options.cwd }).catch(() => undefined)
  const inSet = (name: string) => dirs.some((d) => existsSync(path.join(d, name)))
  return (closure?.objects ?? [])
    .filter((o) => (o.foundBy === 'RPATH' || o.foundBy === 'path') && !dirs.some((d) => isWithin(d, o.path)) && inSet(o.name))
    .map((o) => `${path.basename(o.neededBy?.path ?? program)} loads ${o.name} from ${o.path} (${o.foundBy === 'RPATH' ? 'its DT_RPATH, searched before LD_LIBRARY_PATH' : 'a path in DT_NEEDED'}), not from the mount ` +
      '(hint: leave out --libs, or add --libs auto: p2prun then sends such loads to the mount)')
}

/** The closure's choices as lines for a terminal, served first, each with its reason; none without a closure. */
export function formatChoices (choices: readonly Choice[]): string[] {
  if (choices.length === 0) return []
  const served = choices.filter((c) => c.served)
  const local = choices.filter((c) => !c.served)
  return [
    `served (${served.length}):`,
    ...served.map((c) => `  ${c.path}  (${c.why})`),
    ...(local.length > 0 ? [`not served (${local.length}):`, ...local.map((c) => `  ${c.path}  (${c.why})`)] : [])
  ]
}
