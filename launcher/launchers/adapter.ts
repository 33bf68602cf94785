// One interface for every way of starting ranks. Each adapter knows how to find its launcher, which
// of its options take values (to find where the user's program starts), and how to forward
// p2prun's environment to every rank.
import type { LauncherName } from '../../lib/config.ts'
import { commandOutput, type CommandOutput } from '../../lib/command-output.ts'
import { findExecutable } from '../../lib/files.ts'

export interface LauncherAdapter {
  readonly name: LauncherName
  /** What users install to get it, for "not installed" hints. */
  readonly install: string
  /** Launcher options that take values, and how many (Open MPI's --mca takes two). */
  readonly valueOptions: ReadonlyMap<string, number>
  /** The launcher program on this host, or undefined if it is not installed. */
  find (env: NodeJS.ProcessEnv): Promise<string | undefined>
  /**
   * The full command: launcher program, the user's launcher arguments, whatever forwards `forward`
   * (names of variables set in the launcher's own environment) to every rank, then the rank step.
   */
  command (program: string, userArgs: readonly string[], forward: readonly string[], step: readonly string[],
    env: NodeJS.ProcessEnv): string[]
  /**
   * The hosts the launch may put ranks on, in order, for --discovery nodes (hosts.ts); absent where
   * each node reads them itself (srun's steps: SLURM_STEP_NODELIST).
   */
  hosts? (userArgs: readonly string[], env: NodeJS.ProcessEnv, cwd: string): Promise<string[]>
}

/** Options given as (names, how many values). */
export function valueTable (...groups: [readonly string[], number][]): ReadonlyMap<string, number> {
  const table = new Map<string, number>()
  for (const [names, count] of groups) for (const n of names) table.set(n, count)
  return table
}

/** Which MPI a generic `mpirun`/`mpiexec` belongs to, from its --version banner. */
export async function mpiFlavour (program: string): Promise<'openmpi' | 'mpich' | undefined> {
  // A failed --version may still have printed its banner.
  const r = await commandOutput(program, ['--version'], { timeoutMs: 10_000 }).catch((err: CommandOutput) => err)
  const banner = `${r.stdout}\n${r.stderr}`
  if (/Open MPI|OpenRTE/i.test(banner)) return 'openmpi'
  if (/HYDRA|MPICH/i.test(banner)) return 'mpich'
  return undefined
}

/** A flavour-specific name (mpirun.openmpi) first, then a generic mpirun/mpiexec of that flavour. */
export async function findMpi (flavour: 'openmpi' | 'mpich', specific: readonly string[], env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const name of specific) {
    const found = await findExecutable(name, env)
    if (found) return found
  }
  for (const name of ['mpirun', 'mpiexec']) {
    const found = await findExecutable(name, env)
    if (found && await mpiFlavour(found) === flavour) return found
  }
  return undefined
}
