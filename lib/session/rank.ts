// What every rank does before the user's program (bin/p2prun-rank runs it as `p2prun rank-prepare`):
// register the rank's process with this node's agent for the launch, start that agent if this is
// the node's first rank, wait until its mount is ready, check the program, and return what the
// shell then execs it with: the LD_LIBRARY_PATH, the program's path in the mount when the set was
// made from its load closure, and the audit module that sends the loader's other lookups there.
import path from 'node:path'
import { AlreadyReported, P2prunError } from '../errors.ts'
import { findExecutable } from '../files.ts'
import { decodeJob, JOB_ENV, launchIdOf } from './job-spec.ts'
import { applyTaskEnv, AUDIT_MISSING } from './rank-env.ts'
import { spawnAgent } from './node.ts'
import { NodeState } from './node-state.ts'
import type { Handed } from './warm-agent.ts'
import { nodeIdentity } from './rank-identity.ts'

export interface RankExec {
  readonly libraryPath: string
  /** The program's path in the mount, to exec instead of the name given; undefined: as given. */
  readonly program: string | undefined
  /** Environment to export: the audit module's (LD_AUDIT and its settings), PYTHONPATH, P2PRUN_MOUNT. */
  readonly env: Readonly<Record<string, string>>
}

/**
 * `pid` is the rank's own process (the shell that will become the program), not this helper; `cli`
 * is how this installation is called, to start the node's agent.
 */
export async function prepareRank (program: readonly string[], pid: number, cli: readonly string[], env: NodeJS.ProcessEnv): Promise<RankExec> {
  const job = decodeJob(env[JOB_ENV])
  const node = nodeIdentity(env)
  const launchId = launchIdOf(job, env)
  const state = NodeState.of(job.node.runDir, launchId, node.name)
  await state.create()
  // Registered before anything can fail: the agent counts this rank's process from now on.
  await state.register(pid)
  // The node's first rank hands the launch to an agent lingering from the user's last one, or starts one.
  let handed: Handed | undefined
  if (await state.claimAgent()) {
    const launch = { job, node: node.name, launchId, expect: node.localSize ?? 0, env }
    if (job.node.agentLingerMs > 0) handed = await (await import('./warm-agent.ts')).handToWarmAgent(job.node.runDir, launch, state, job.node.startTimeoutMs)
    if (!handed) await spawnAgent(cli, state, launch)
  }
  const ready = await state.waitReady(`node ${node.name}`, job.node.startTimeoutMs).finally(() => handed?.release()).catch(async (err: unknown) => {
    // Claimed while this rank is still registered, so the state directory is still there.
    const first = await state.claimReport()
    await state.leaveFailed(pid, node.localSize)
    throw first ? err : new AlreadyReported()
  })
  // The environment the agent wrote for its ranks (for Slurm's task hook and the native step too).
  const entries = await state.readTaskEnv()
  if (job.redirect && !entries.some((e) => e.name === 'LD_AUDIT') && node.rank === 0 && !job.node.quiet) {
    process.stderr.write(`p2prun: warning: ${AUDIT_MISSING}\n`)
  }
  const { LD_LIBRARY_PATH: ldPath = '', ...exported } = applyTaskEnv(entries, env)
  if (job.program !== undefined) return { libraryPath: ldPath, program: path.join(ready.mountPoint, job.program), env: exported }
  const name = program[0] as string
  if (!(await findExecutable(name, env))) {
    throw new P2prunError('LAUNCH', `node ${node.name}: program ${name} not found or not executable`, { hint: 'give a path, or put it on PATH on every node' })
  }
  return { libraryPath: ldPath, program: undefined, env: exported }
}
