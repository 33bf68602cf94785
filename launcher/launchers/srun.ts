// Slurm's srun. Tasks see SLURM_LOCALID and SLURM_STEP_TASKS_PER_NODE; srun exports the caller's
// whole environment by default, and an explicit --export from the user gets p2prun's names added.
import { findExecutable } from '../../lib/files.ts'
import { valueTable, type LauncherAdapter } from './adapter.ts'

export const srun: LauncherAdapter = {
  name: 'srun',
  install: 'apt-get install slurm-client (inside an allocation)',
  valueOptions: valueTable(
    [['-A', '-B', '-c', '-d', '-D', '-e', '-i', '-J', '-L', '-m', '-n', '-N', '-o', '-p', '-q', '-r', '-S',
      '-t', '-T', '-w', '-x', '-W', '-C', '-G',
      '--account', '--nodes', '--ntasks', '--cpus-per-task', '--partition', '--time', '--nodelist', '--exclude',
      '--job-name', '--output', '--error', '--input', '--chdir', '--mpi', '--ntasks-per-node', '--mem',
      '--mem-per-cpu', '--gres', '--constraint', '--distribution', '--export', '--qos', '--reservation',
      '--dependency', '--cpu-bind', '--gpus', '--label-format'], 1]),
  find: (env) => findExecutable('srun', env),
  command: (program, userArgs, forward, step) => [program, ...userArgs.map((a) => withExport(a, forward)), ...step]
}

/** `--export=NONE,FOO` would drop p2prun's variables: add them. ALL (the default) carries them. */
function withExport (arg: string, forward: readonly string[]): string {
  const m = arg.match(/^--export=(.*)$/)
  if (!m || forward.length === 0 || /^ALL\b/.test(m[1] ?? '')) return arg
  return `--export=${m[1]},${forward.join(',')}`
}
