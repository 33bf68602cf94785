// One launch, as every rank sees it: the job spec p2prun hands to the ranks through the launcher's
// environment (one variable, so every launcher forwards it the same way), and where each rank
// stands on its node, read from whichever launcher started it.
import path from 'node:path'
import type { DataMode } from './config.ts'
import type { SourceLayout } from './source-layout.ts'
import { usageError } from './errors.ts'

export const JOB_ENV = 'P2PRUN_JOB'
/** Test knob: every rank acts as its own node (own agent, own mount), so one host emulates many. */
export const NODE_PER_RANK_ENV = 'P2PRUN_NODE_PER_RANK'

/** A launch id that means "this Slurm job": the prolog's agents serve every step of the job. */
export const SLURM_LAUNCH = 'slurm'

export interface JobSpec {
  /** Unique per launch: two launches of the same libraries never share agents or mounts. */
  readonly launchId: string
  readonly infoHash: string
  readonly descriptionUrl: string
  readonly trackers: readonly string[]
  readonly seeders: readonly string[]
  /** Mount point template (%i infohash prefix, %n node name, %j launch id). */
  readonly mountPoint: string
  /** Directories inside the mount to put first on LD_LIBRARY_PATH ('' is the mount itself). */
  readonly libDirs: readonly string[]
  readonly mode: DataMode
  /** POST here to stop the head (Slurm's epilog does, at job end). */
  readonly stopUrl?: string
  /** The job's secret (hex), which nodes prove to the tracker and to each other; absent: an open head. */
  readonly secret?: string
  /** The directories the set was described from (names in the set, paths on the submit host): the fallback's. */
  readonly sources?: SourceLayout['dirs']
  /** The program as a path inside the mount: ranks exec it from there (a set made from its load closure). */
  readonly program?: string
  /** Directories inside the mount to put first on PYTHONPATH: the Python packages served. */
  readonly pythonPath?: readonly string[]
  /**
   * Directories (submit-host paths) whose files are in the mount at the same path, for the rank's
   * audit module: lookups in `whole` ones always go to the mount, in `some` only for files it has.
   */
  readonly redirect?: { readonly whole: readonly string[], readonly some: readonly string[] }
}

export function encodeJob (job: JobSpec): string {
  return Buffer.from(JSON.stringify(job)).toString('base64url')
}

export function decodeJob (raw: string | undefined): JobSpec {
  if (!raw) throw usageError(`${JOB_ENV} is not set: this step runs only under \`p2prun -n N ./app\``)
  try {
    const job = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as JobSpec
    if (typeof job.infoHash !== 'string' || typeof job.launchId !== 'string') throw new Error('fields missing')
    return job
  } catch (err) {
    throw usageError(`${JOB_ENV} is corrupt (${(err as Error).message})`, 'launch through p2prun, which sets it')
  }
}

export interface NodeIdentity {
  /** Names the node in state paths, mount points (%n) and messages. */
  readonly name: string
  readonly rank: number
  /** This rank's index among the job's ranks on this node, and how many there are; undefined if unknown. */
  readonly localRank: number | undefined
  readonly localSize: number | undefined
}

const int = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined)

/**
 * Rank and node-local rank from Open MPI, MPICH/Hydra, PMIx, Slurm, Flux or p2prun's local
 * launcher, whichever set them.
 */
export function nodeIdentity (env: NodeJS.ProcessEnv, hostName: string): NodeIdentity {
  const rank = int(env.OMPI_COMM_WORLD_RANK) ?? int(env.PMI_RANK) ?? int(env.PMIX_RANK) ?? int(env.SLURM_PROCID) ?? int(env.FLUX_TASK_RANK) ?? int(env.P2PRUN_RANK) ?? 0
  const name = env.SLURMD_NODENAME ?? hostName
  if (env[NODE_PER_RANK_ENV] === '1') return { name: `${name}-rank${rank}`, rank, localRank: 0, localSize: 1 }
  return {
    name,
    rank,
    localRank: int(env.OMPI_COMM_WORLD_LOCAL_RANK) ?? int(env.MPI_LOCALRANKID) ?? int(env.PMIX_LOCAL_RANK) ?? int(env.SLURM_LOCALID) ??
      int(env.FLUX_TASK_LOCAL_ID) ?? int(env.P2PRUN_LOCAL_RANK),
    localSize: int(env.OMPI_COMM_WORLD_LOCAL_SIZE) ?? int(env.MPI_LOCALNRANKS) ?? int(env.PMIX_LOCAL_SIZE) ?? slurmTasksOnNode(env) ?? int(env.P2PRUN_LOCAL_SIZE)
  }
}

/** SLURM_STEP_TASKS_PER_NODE is "2(x3),1": tasks per node, run-length encoded, indexed by SLURM_NODEID. */
export function slurmTasksOnNode (env: NodeJS.ProcessEnv): number | undefined {
  const spec = env.SLURM_STEP_TASKS_PER_NODE ?? env.SLURM_TASKS_PER_NODE
  const node = int(env.SLURM_NODEID)
  if (!spec || node === undefined) return undefined
  let index = 0
  for (const part of spec.split(',')) {
    const m = part.match(/^(\d+)(?:\(x(\d+)\))?$/)
    if (!m) return undefined
    index += Number(m[2] ?? 1)
    if (node < index) return Number(m[1])
  }
  return undefined
}

/** %i: infohash prefix, %n: node name, %j: launch id, %%: a percent sign. */
export function expandTemplate (template: string, vars: { infoHash: string, nodeName: string, launchId?: string }): string {
  return template.replace(/%([inj%])/g, (_, c: string) =>
    c === 'i' ? vars.infoHash.slice(0, 16) : c === 'n' ? vars.nodeName : c === 'j' ? (vars.launchId ?? '') : '%')
}

/** The launch's id on this node: a Slurm job's steps all share the prolog's agent. */
export function launchIdOf (job: JobSpec, env: NodeJS.ProcessEnv): string {
  return job.launchId === SLURM_LAUNCH ? `slurm-${env.SLURM_JOB_ID ?? 'unknown'}` : job.launchId
}

/** Per-launch, per-node state: agent lock, ready/failed files, rank registrations, log, ldpath. */
export function nodeStateDir (runDir: string, launchId: string, nodeName: string): string {
  return path.join(runDir, `job-${launchId}-${nodeName.replace(/[^\w.-]/g, '_')}`)
}

/** A search path (LD_LIBRARY_PATH, PYTHONPATH) with the mount's directories first and the user's after. */
export function libraryPath (mountPoint: string, libDirs: readonly string[], previous: string | undefined): string {
  const ours = libDirs.map((d) => (d === '' ? mountPoint : path.join(mountPoint, d)))
  return [...ours, ...(previous ? [previous] : [])].join(':')
}
