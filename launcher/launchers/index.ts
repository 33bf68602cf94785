// Choosing the launcher: named with --launcher, or "auto": inside a Slurm allocation srun; else the
// mpirun on PATH, recognised as Open MPI or MPICH; else p2prun's own local launcher.
import type { LauncherChoice, LauncherName } from '../../lib/config.ts'
import { P2prunError } from '../../lib/errors.ts'
import { findExecutable } from '../../lib/files.ts'
import { mpiFlavour, type LauncherAdapter } from './adapter.ts'
import { localAdapter } from './local.ts'
import { mpich } from './mpich.ts'
import { openmpi } from './openmpi.ts'
import { srun } from './srun.ts'

/** Every launcher's value-taking options: enough to find p2prun's own options before one is chosen. */
export const ANY_LAUNCHER_VALUES: ReadonlyMap<string, number> = new Map(
  [openmpi, mpich, srun].flatMap((a) => [...a.valueOptions]))

export interface ChosenLauncher {
  readonly adapter: LauncherAdapter
  readonly program: string
}

export async function chooseLauncher (wanted: LauncherChoice, env: NodeJS.ProcessEnv, cli: readonly string[]): Promise<ChosenLauncher> {
  const adapters: Record<LauncherName, LauncherAdapter> = { local: localAdapter(cli), openmpi, mpich, srun }
  if (wanted === 'auto') return autoDetect(adapters, env)
  const adapter = adapters[wanted]
  const program = await adapter.find(env)
  if (!program) {
    throw new P2prunError('LAUNCH', `the ${wanted} launcher is not installed on this host`, { hint: adapter.install })
  }
  return { adapter, program }
}

async function autoDetect (adapters: Record<LauncherName, LauncherAdapter>, env: NodeJS.ProcessEnv): Promise<ChosenLauncher> {
  if (env.SLURM_JOB_ID) {
    const program = await srun.find(env)
    if (program) return { adapter: srun, program }
  }
  const mpirun = await findExecutable('mpirun', env) ?? await findExecutable('mpiexec', env)
  const flavour = mpirun ? await mpiFlavour(mpirun) : undefined
  if (mpirun && flavour) return { adapter: adapters[flavour], program: mpirun }
  const local = adapters.local
  return { adapter: local, program: (await local.find(env)) as string }
}
