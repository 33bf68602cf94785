// What a rank's program runs with, beside the environment it was started with: the library path
// into the mount, the audit module and its settings (a set made from the program's load closure),
// PYTHONPATH (Python packages served), P2PRUN_MOUNT. The launch works it out once, where it starts,
// as templates of the mount point (the job spec's taskEnv); each node's agent, Node's or native,
// expands them for its mount and writes them to the node state (node-state.ts); every way a rank
// starts applies that: p2prun's rank step (rank.ts, or native/rank-step.c), and under `srun` in a
// --p2plibs job Slurm's task hook (slurm/p2plibs.c).
import { AUDIT_FILE, builtDistFile, distFile } from '../dist-files.ts'
import { libraryPath, type JobSpec, type TaskEnvEntry } from './job-spec.ts'

type Placement = Pick<JobSpec, 'libDirs' | 'redirect' | 'pythonPath'>

/**
 * The entries for ranks of a set placed as `job` says, on a node whose mount is at `mountPoint`.
 * `auditModule`: the audit module's path, or undefined where it is missing (then DT_RPATH and
 * absolute dlopen loads go where they point; the caller says so).
 */
export function taskEnv (job: Placement, mountPoint: string, auditModule: string | undefined): TaskEnvEntry[] {
  const entries: TaskEnvEntry[] = [
    { name: 'LD_LIBRARY_PATH', op: 'prepend', value: libraryPath(mountPoint, job.libDirs, undefined) },
    // The program may want its own files from the mount (data beside the libraries, plugins).
    { name: 'P2PRUN_MOUNT', op: 'set', value: mountPoint }
  ]
  if (job.redirect && auditModule) {
    // A program's own LD_AUDIT modules stay, before ours.
    entries.push({ name: 'LD_AUDIT', op: 'append', value: auditModule },
      { name: 'P2PRUN_AUDIT_MOUNT', op: 'set', value: mountPoint },
      { name: 'P2PRUN_AUDIT_WHOLE', op: 'set', value: job.redirect.whole.join(':') },
      { name: 'P2PRUN_AUDIT_SOME', op: 'set', value: job.redirect.some.join(':') })
  }
  if (job.pythonPath) entries.push({ name: 'PYTHONPATH', op: 'prepend', value: libraryPath(mountPoint, job.pythonPath, undefined) })
  return entries
}

/**
 * The entries as the job spec carries them: each value a template in which %m is the mount point
 * and %% a percent sign (the mount point template's escapes, job-spec.ts's expandTemplate), made
 * once for every node. The audit module is this installation's: every node has p2prun at the
 * same path.
 */
export function taskEnvTemplate (job: Placement): TaskEnvEntry[] {
  // A NUL cannot be in a path: it marks the mount point while the rest is escaped.
  return taskEnv(job, '\0', job.redirect ? builtDistFile(AUDIT_FILE) : undefined)
    .map((e) => ({ ...e, value: e.value.replaceAll('%', '%%').replaceAll('\0', '%m') }))
}

/** The spec's entries for the mount at `mountPoint` (native/agent/node-agent.c expands them the same way). */
export function expandTaskEnv (entries: readonly TaskEnvEntry[], mountPoint: string): TaskEnvEntry[] {
  return entries.map((e) => ({ ...e, value: e.value.replace(/%([m%])/g, (_, c: string) => c === 'm' ? mountPoint : '%') }))
}

export const AUDIT_MISSING = `${distFile(AUDIT_FILE)} is missing: libraries found through DT_RPATH or loaded by absolute path come from their original place (hint: rebuild with npm run build)`

/** The values `entries` give, each combined with `env`'s own. */
export function applyTaskEnv (entries: readonly TaskEnvEntry[], env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {}
  for (const { name, op, value } of entries) {
    const own = env[name]
    out[name] = op === 'set' || !own ? value : op === 'prepend' ? `${value}:${own}` : `${own}:${value}`
  }
  return out
}
