// A node's agent for one launch: started detached by the node's first rank (rank.ts) or by Slurm's
// prolog (slurm.ts) as `p2prun node-agent`; it gets the description from peers that have it, else
// from the head (checked against the infohash of the job spec), mounts it on the swarm, says ready
// in the node state, and stays until the node's last rank has ended — however it ended — or, for a
// Slurm job, until the epilog stops it; then it unmounts and removes the node state.
import { spawn, type ChildProcess } from 'node:child_process'
import { open } from 'node:fs/promises'
import type { Description } from '../description.ts'
import { failureOf, networkReason, P2prunError } from '../errors.ts'
import type { JobSecret } from '../swarm/job-auth.ts'
import { descriptionOf, encodeJob, expandTemplate, JOB_ENV, libraryPath, type JobSpec } from './job-spec.ts'
import { NodeState } from './node-state.ts'

export interface AgentLaunch {
  readonly job: JobSpec
  /** The node's name (state directory, %n) and the launch's id on it (launchIdOf). */
  readonly node: string
  readonly launchId: string
  /** Ranks of the launch on this node (0: unknown): the agent stays until that many have come and gone. */
  readonly expect?: number
  /** Serve until SIGTERM (Slurm's epilog), not until the ranks are gone. */
  readonly untilStopped?: boolean
}

/**
 * Starts `p2prun node-agent` detached, its output in the node state's log. `cli` is how this
 * installation is called. An agent that dies before it is ready cannot say so itself: its exit is
 * recorded as the node's failure then, unless it recorded one of its own first.
 */
export async function spawnAgent (cli: readonly string[], state: NodeState, launch: AgentLaunch,
  options: { env: NodeJS.ProcessEnv, uid?: number, gid?: number }): Promise<ChildProcess> {
  const log = await open(state.logFile, 'a')
  try {
    if (options.uid !== undefined) await log.chown(options.uid, options.gid ?? options.uid)
    const [file, ...args] = cli as [string, ...string[]]
    const agent = spawn(file, [...args, 'node-agent', '--node', launch.node, '--launch-id', launch.launchId,
      ...(launch.expect ? ['--expect', String(launch.expect)] : []), ...(launch.untilStopped ? ['--until-stopped'] : [])], {
      detached: true, // the agent outlives the rank step (which becomes the program) and the prolog
      stdio: ['ignore', log.fd, log.fd],
      env: { ...options.env, [JOB_ENV]: encodeJob(launch.job) },
      ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid ?? options.uid } : {})
    })
    agent.on('exit', (code, signal) => {
      void state.readReady().then((ready) => ready ? undefined : state.fail({
        code: 'LAUNCH',
        message: `the node agent exited (${signal ?? `code ${code}`}) before its mount was ready`,
        hint: `see ${state.logFile}`
      }))
    })
    agent.unref()
    return agent
  } finally {
    await log.close()
  }
}

/** The agent itself (`p2prun node-agent`): runs until its ranks are gone or `stop` resolves. */
export async function runAgent (launch: AgentLaunch, stop: Promise<unknown>, log: (line: string) => void): Promise<void> {
  const { job, node } = launch
  const settings = job.node
  const state = NodeState.of(settings.runDir, launch.launchId, node)
  let agent
  try {
    // Imported here, not above: every rank loads this module to start its node's agent.
    const { parseJobSecret, withProof } = await import('../swarm/job-auth.ts')
    const secret = job.secret === undefined ? undefined : parseJobSecret(job.secret, `${JOB_ENV}'s secret`)
    const desc = await descriptionInSpec(job) ?? (secret && await descriptionFromPeers(job, secret, log)) ??
      await fetchDescription(withProof(job.descriptionUrl, secret, 'description', Buffer.from(job.infoHash, 'hex')),
        job.infoHash, node, settings.stallTimeoutMs)
    const { Agent } = await import('../agent.ts')
    const { agentOptions, nodeOptions } = await import('../agent-settings.ts')
    const mountPoint = expandTemplate(job.mountPoint, { infoHash: desc.infoHash, nodeName: node, launchId: launch.launchId })
    agent = await Agent.start(agentOptions(settings, desc, mountPoint, {
      mode: settings.mode,
      node: nodeOptions(settings, { trackers: job.trackers, seeders: job.seeders, secret, sources: job.sources }),
      keepStore: false,
      log
    }))
  } catch (err) {
    await state.fail(failureOf(err))
    throw err
  }
  try {
    await state.ready({ mountPoint: agent.mountPoint, pid: process.pid, storePath: agent.storePath }, libraryPath(agent.mountPoint, job.libDirs, undefined))
    log(`${agent.mountPoint} ready for the ranks on ${node}`)
    await (launch.untilStopped ? stop : Promise.race([stop, state.ranksEnded(launch.expect ?? 0)]))
  } finally {
    await agent.stop()
    await state.remove()
  }
}

/** The description the spec carries, checked against its infohash like any other. */
async function descriptionInSpec (job: JobSpec): Promise<Description | undefined> {
  const bytes = descriptionOf(job)
  if (!bytes) return undefined
  const { parseDescription } = await import('../description.ts')
  return parseDescription(bytes, { source: `${JOB_ENV}'s description`, expectInfoHash: job.infoHash })
}

/**
 * The description from peers of the job's swarm (swarm/description-exchange.ts), checked against
 * the infohash; undefined if none handed it over in time: the head is asked then.
 */
async function descriptionFromPeers (job: JobSpec, secret: JobSecret, log: (line: string) => void): Promise<Description | undefined> {
  const { fetchDescriptionFromPeers } = await import('../swarm/description-exchange.ts')
  const { parseDescription } = await import('../description.ts')
  let desc: Description | undefined
  const bytes = await fetchDescriptionFromPeers({
    infoHash: Buffer.from(job.infoHash, 'hex'),
    secret,
    trackers: job.trackers,
    seeders: job.seeders,
    deadlineMs: PEER_DESCRIPTION_MS,
    accept: (candidate) => {
      try {
        desc = parseDescription(candidate, { source: 'a peer', expectInfoHash: job.infoHash })
        return true
      } catch {
        return false // another peer may have the right one
      }
    }
  })
  if (!bytes) log(`no peer handed over the description in ${PEER_DESCRIPTION_MS / 1000} s: asking the head`)
  return desc
}

/** How long a node tries peers for the description before it asks the head over HTTP. */
const PEER_DESCRIPTION_MS = 10_000

/** `url` carries the request's proof: messages name it without. */
async function fetchDescription (url: string, infoHash: string, node: string, timeoutMs: number): Promise<Description> {
  const where = url.replace(/\?.*/, '')
  let bytes: Uint8Array
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    bytes = new Uint8Array(await res.arrayBuffer())
  } catch (err) {
    throw new P2prunError('LAUNCH', `node ${node} cannot get the description from ${where}: ${networkReason(err)}`,
      { hint: 'check that the submitting host (or --seeder) is reachable from this node', cause: err })
  }
  const { parseDescription } = await import('../description.ts')
  return parseDescription(bytes, { source: where, expectInfoHash: infoHash })
}
