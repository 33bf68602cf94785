// The hosts an MPI launch may put ranks on, read the way mpirun/mpiexec reads them, for
// --discovery nodes (the nodes' list: lib/session/launch-nodes.ts): the host lists given as options
// (Open MPI's -H a,b:2; Hydra's -hosts), else the hostfiles given as options, else the resource
// manager's allocation (Slurm's, PBS's node file), else this host alone. Each host once, in order.
// A superset is harmless (a listed node with no rank has no agent: peers that dial it move on);
// a host missing from the list would find no place in it, and its agent says so.
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { usageError } from '../../lib/errors.ts'
import { expandHostlist } from '../../lib/session/launch-nodes.ts'

export interface HostOptions {
  /** Options whose value is a comma-separated list of hosts, each maybe with :slots. */
  readonly lists: readonly string[]
  /** Options whose value is a hostfile: a host first on each line, then slots in the launcher's syntax. */
  readonly files: readonly string[]
  /** An environment variable naming a default hostfile (Hydra's HYDRA_HOST_FILE). */
  readonly fileEnv?: string
}

export async function launchHosts (userArgs: readonly string[], options: HostOptions, env: NodeJS.ProcessEnv, cwd: string): Promise<string[]> {
  const lists = valuesOf(userArgs, options.lists)
  if (lists.length > 0) return unique(lists.flatMap((list) => list.split(',')).map(withoutSlots))
  const files = valuesOf(userArgs, options.files)
  const defaultFile = options.fileEnv && env[options.fileEnv]
  if (files.length === 0 && defaultFile) files.push(defaultFile)
  if (files.length > 0) return unique((await Promise.all(files.map((f) => hostfileHosts(path.resolve(cwd, f))))).flat())
  if (env.SLURM_JOB_ID && env.SLURM_JOB_NODELIST) return expandHostlist(env.SLURM_JOB_NODELIST)
  if (env.PBS_NODEFILE) return unique(await hostfileHosts(env.PBS_NODEFILE))
  return ['localhost']
}

/** Every value of the options `names` (`-H a`, `--host=a`), in order. */
function valuesOf (args: readonly string[], names: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string
    const eq = arg.indexOf('=')
    if (arg.startsWith('--') && eq > 0 && names.includes(arg.slice(0, eq))) out.push(arg.slice(eq + 1))
    else if (names.includes(arg) && i + 1 < args.length) out.push(args[++i] as string)
  }
  return out
}

/** A hostfile's hosts: the first word of each line ("n1 slots=4", "n1:4"), comments and blank lines skipped. */
async function hostfileHosts (file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw usageError(`cannot read the hostfile ${file}: ${err.code ?? err.message}`, 'give --discovery nodes the launcher\'s hostfile, readable here')
  })
  return text.split('\n').map((line) => line.replace(/#.*/, '').trim().split(/\s+/)[0] ?? '').filter((host) => host !== '').map(withoutSlots)
}

/** "n1:4" is n1 with 4 slots (Open MPI's -H, Hydra's lists and files). */
const withoutSlots = (host: string) => host.trim().replace(/:\d+$/, '')

const unique = (hosts: readonly string[]) => [...new Set(hosts.filter((h) => h !== ''))]
