// Who a rank is and which node it runs on, read from whichever launcher started it: Open MPI,
// MPICH/Hydra, PMIx, Slurm, Flux or p2prun's local launcher.
import os from 'node:os'
import { NODE_PER_RANK_ENV } from './job-spec.ts'

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
 * The node's name is its own: Slurm's for the node, else P2PRUN_NODE_NAME set for it, else the
 * host name.
 */
export function nodeName (env: NodeJS.ProcessEnv): string {
  return env.SLURMD_NODENAME || env.P2PRUN_NODE_NAME || os.hostname()
}

export function nodeIdentity (env: NodeJS.ProcessEnv): NodeIdentity {
  const rank = int(env.OMPI_COMM_WORLD_RANK) ?? int(env.PMI_RANK) ?? int(env.PMIX_RANK) ?? int(env.SLURM_PROCID) ?? int(env.FLUX_TASK_RANK) ?? int(env.P2PRUN_RANK) ?? 0
  const name = nodeName(env)
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
