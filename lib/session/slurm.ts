// A Slurm job's session, behind the SPANK plugin (slurm/p2plibs.c) and the prolog/epilog hooks:
//   head     at submit time: a detached head (detached-head.ts) for the directories (or what a
//            program loads: auto:PROGRAM), its job spec handed back
//   prolog   as root on every node: start the node's agent for the job (as the job's user), wait for it
//   epilog   as root on every node: stop it, leave nothing behind, tell the head the job ended
// The plugin hands the spec to the prolog and epilog as SPANK_P2PRUN_JOB.
import { chown, rm, rmdir } from 'node:fs/promises'
import path from 'node:path'
import { AUTO_LIBS, defaultRunDir } from '../config.ts'
import { failureOf, usageError } from '../errors.ts'
import { decodeJob, JOB_ENV, launchIdOf, type JobSpec } from './job-spec.ts'
import { spawnAgent, withDescription } from './node.ts'
import { NodeState, readWarmAgentRecord, warmAgentFiles } from './node-state.ts'
import { terminate } from './process.ts'
import { nodeName } from './rank-identity.ts'
import { launchNodeList, slurmHostlist } from './launch-nodes.ts'

const EPILOG_WAIT_MS = 15_000

/** The spec the plugin passed (the hooks see it as SPANK_P2PRUN_JOB); none: the job did not ask. */
export function jobOfHook (env: NodeJS.ProcessEnv): JobSpec | undefined {
  const raw = env[`SPANK_${JOB_ENV}`] ?? env[JOB_ENV]
  return raw ? decodeJob(raw) : undefined
}

/** What `--p2plibs=` names: directories, and `auto:PROGRAM` for what PROGRAM loads (one program). */
export interface SlurmLibs {
  /** Absolute directories, and AUTO_LIBS with a program. */
  readonly libs: readonly string[]
  readonly program?: string
}

export function slurmLibs (values: readonly string[], cwd: string): SlurmLibs {
  const programs = values.filter((v) => v === AUTO_LIBS || v.startsWith(`${AUTO_LIBS}:`)).map((v) => v.slice(AUTO_LIBS.length + 1))
  const dirs = values.filter((v) => v !== AUTO_LIBS && !v.startsWith(`${AUTO_LIBS}:`)).map((d) => path.resolve(cwd, d))
  if (programs.length === 0) {
    if (dirs.length === 0) throw usageError('--p2plibs names no directory', '--p2plibs=DIR[,DIR...], or --p2plibs=auto:./app for what ./app loads')
    return { libs: dirs }
  }
  const [program, other] = programs
  if (program === '') throw usageError(`--p2plibs=${AUTO_LIBS} needs the program whose libraries to serve`, `--p2plibs=${AUTO_LIBS}:./app (the program the job's srun steps run)`)
  if (other !== undefined) throw usageError(`--p2plibs names two programs (${program}, ${other}): a job serves one program's closure`, 'name the one its steps run, and add the other\'s library directory')
  // A name without a slash is looked up on PATH, as the job's steps will; a path is made absolute here.
  return { libs: [...dirs, AUTO_LIBS], program: program?.includes('/') ? path.resolve(cwd, program) : program }
}

/** The prolog: this node's agent for the job, as the job's user (root only for root's jobs). */
export async function startJobAgent (cli: readonly string[], job: JobSpec, env: NodeJS.ProcessEnv): Promise<void> {
  const node = nodeName(env)
  const launchId = launchIdOf(job, env)
  const state = NodeState.of(job.node.runDir, launchId, node)
  const uid = Number(env.SLURM_JOB_UID ?? process.getuid?.() ?? 0)
  const gid = Number(env.SLURM_JOB_GID ?? process.getgid?.() ?? 0)
  // A node list is checked here, where its error reaches the job; the agent reads it again.
  if (job.nodeList) await launchNodeList(env, node, job.nodeList)
  const hostlist = job.nodeList && slurmHostlist(env)
  await state.create()
  await state.claimAgent() // the job's ranks find this agent and never start one
  await chown(state.dir, uid, gid)
  // Its failure is the node's, as the agent's would be: the job's ranks read it from the state.
  const served = await withDescription(job, node, (line) => process.stderr.write(`p2prun prolog: ${line}\n`))
    .catch(async (err: unknown) => { await state.fail(failureOf(err)); throw err })
  await spawnAgent(cli, state, { job: served, node, launchId, untilStopped: true, env: { PATH: env.PATH ?? '/usr/bin:/bin', ...(hostlist ? { SLURM_JOB_NODELIST: hostlist } : {}) } }, {
    ...(process.getuid?.() === 0 && uid !== 0 ? { uid, gid } : {})
  })
  await state.waitReady(`node ${node}`, job.node.startTimeoutMs)
}

/** The epilog: stops the agent, removes its mount, store and state, and tells the head. */
export async function stopJobAgent (job: JobSpec, env: NodeJS.ProcessEnv): Promise<void> {
  const state = NodeState.of(job.node.runDir, launchIdOf(job, env), nodeName(env))
  const ready = await state.readReady()
  try {
    if (ready) {
      await terminate(ready.pid, EPILOG_WAIT_MS)
      const { isMounted, lazyUnmount } = await import('../mount.ts')
      if (await isMounted(ready.mountPoint)) await lazyUnmount(ready.mountPoint)
      if (ready.storePath) await rm(ready.storePath, { recursive: true, force: true })
      await rmdir(ready.mountPoint).catch(() => {}) // the agent removes it when it made it; a dead agent cannot
    }
  } finally {
    await state.remove()
    // The first epilog of the job stops its head; later ones find it gone. An array's tasks share
    // one head, which stays while another of its jobs is queued (slurm-queue.ts).
    const jobId = env.SLURM_JOB_ID
    if (job.stopUrl) await fetch(`${job.stopUrl}${jobId ? `?job=${encodeURIComponent(jobId)}` : ''}`, { method: 'POST', signal: AbortSignal.timeout(5000) }).catch(() => {})
  }
}

/**
 * The epilog, for any job: stops this node's agent that a launch of the job left lingering
 * (agent-linger) in the job's user's run directory, with the store it kept. Agents in a run
 * directory set by the user are theirs to stop; they leave when their linger is up.
 */
export async function stopLingeringAgent (env: NodeJS.ProcessEnv): Promise<void> {
  const jobId = env.SLURM_JOB_ID
  const uid = Number(env.SLURM_JOB_UID)
  if (!jobId || !Number.isInteger(uid)) return
  const record = await readWarmAgentRecord(warmAgentFiles(defaultRunDir(uid), nodeName(env)).record)
  if (record?.slurmJob === jobId) await terminate(record.pid, EPILOG_WAIT_MS)
}
