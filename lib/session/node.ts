// A node's agent for one launch: started detached by the node's first rank (rank.ts) or by Slurm's
// prolog (slurm.ts) as `p2prun node-agent`; it takes the description from the job spec, or from
// peers that have it, else from the head (checked against the spec's infohash), mounts it on the swarm, says ready
// in the node state, and stays until the node's last rank has ended — however it ended — or, for a
// Slurm job, until the epilog stops it; then it unmounts and removes the node state. With
// agent-linger, the process then waits for the node's next launch (warm-agent.ts), and runs this
// again for it.
import { spawn, type ChildProcess } from 'node:child_process'
import { open, rm } from 'node:fs/promises'
import { builtDistFile, NATIVE_AGENT_FILE } from '../dist-files.ts'
import { debugLevel } from '../debug.ts'
import type { Description } from '../description.ts'
import { failureOf, networkReason, P2prunError } from '../errors.ts'
import type { DhtLookup } from '../swarm/dht.ts'
import type { JobSecret } from '../swarm/job-auth.ts'
import type { NodeList } from '../swarm/node-list.ts'
import type { KeptStore } from '../swarm/node.ts'
import type { RunningAgent, Usage } from '../agent.ts'
import { descriptionOf, encodeJob, expandTemplate, JOB_ENV, specDescription, type JobSpec } from './job-spec.ts'
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
  /** The environment of the rank (or prolog) that started it: the node's name, the launcher's node list, P2PRUN_DEBUG. */
  readonly env: NodeJS.ProcessEnv
  /** Handed to a lingering agent (warm-agent.ts): its CPU counts from the hand-off, not from the process's start. */
  readonly handed?: boolean
  /** A lingering agent's: where the launch finds the store the same set's last launch left, and leaves its own. */
  readonly shelf?: StoreShelf
}

/** The store one set's launch leaves for the same set's next launch in this process (warm-agent.ts keeps one). */
export interface StoreShelf {
  /** The store kept for this set, taken off the shelf; undefined if none is. */
  take (infoHash: string): KeptStore | undefined
  put (store: KeptStore): Promise<void>
}

/**
 * Starts the node's agent detached, its output in the node state's log: the native one
 * (native/agent/node-agent.c), which serves a launch that chose it without Node and becomes `cli
 * node-agent` for any other, or that, where there is no native agent. `cli` is how this
 * installation is called. An agent that dies before it is ready cannot say so itself: its exit is
 * recorded as the node's failure then, unless it recorded one of its own first.
 */
export async function spawnAgent (cli: readonly string[], state: NodeState, launch: AgentLaunch,
  options: { uid?: number, gid?: number } = {}): Promise<ChildProcess> {
  const log = await open(state.logFile, 'a')
  try {
    if (options.uid !== undefined) await log.chown(options.uid, options.gid ?? options.uid)
    const nativeAgent = builtDistFile(NATIVE_AGENT_FILE)
    const command = [...nativeAgent ? [nativeAgent] : cli, 'node-agent', '--node', launch.node, '--launch-id', launch.launchId,
      ...(launch.expect ? ['--expect', String(launch.expect)] : []), ...(launch.untilStopped ? ['--until-stopped'] : []),
      ...nativeAgent ? ['--', ...cli] : []]
    const [file, ...args] = command as [string, ...string[]]
    const agent = spawn(file, args, {
      detached: true, // the agent outlives the rank step (which becomes the program) and the prolog
      stdio: ['ignore', log.fd, log.fd],
      env: { ...launch.env, [JOB_ENV]: encodeJob(launch.job) },
      ...(options.uid !== undefined ? { uid: options.uid, gid: options.gid ?? options.uid } : {})
    })
    agent.on('exit', (code, signal) => agentLost(state, `the node agent exited (${signal ?? `code ${code}`}) before its mount was ready`))
    agent.unref()
    return agent
  } finally {
    await log.close()
  }
}

/** An agent that ended: the node's failure, unless it was ready or recorded a failure of its own first. */
export function agentLost (state: NodeState, message: string): void {
  void state.readReady().then((ready) => ready ? undefined : state.fail({ code: 'LAUNCH', message, hint: `see ${state.logFile}` }))
}

/** The agent itself (`p2prun node-agent`): runs until its ranks are gone or `stop` resolves. */
export async function runAgent (launch: AgentLaunch, stop: Promise<unknown>, log: (line: string) => void): Promise<void> {
  const { job, node } = launch
  const settings = job.node
  const state = NodeState.of(settings.runDir, launch.launchId, node)
  const debug = debugLevel(launch.env)
  const usageFrom = launch.handed ? usageNow() : { user: 0, system: 0, voluntary: 0, involuntary: 0 }
  let agent: RunningAgent
  let lookup: DhtLookup | undefined
  let reuse: KeptStore | undefined
  try {
    // Imported here, not above: every rank loads this module to start its node's agent.
    const { parseJobSecret } = await import('../swarm/job-auth.ts')
    const secret = job.secret === undefined ? undefined : parseJobSecret(job.secret, `${JOB_ENV}'s secret`)
    // With a DHT, one DHT node looks for the description's holders and then is the node's own.
    if (secret && job.dht?.length && job.description === undefined) lookup = await (await import('../swarm/dht.ts')).DhtLookup.toward(job.dht).catch(() => undefined)
    const nodeList = job.nodeList && await (await import('./launch-nodes.ts')).launchNodeList(launch.env, node, job.nodeList)
    const desc = await descriptionFor(job, secret, lookup, nodeList, node, (line) => { if (debug >= 2) log(line) }, log)
    if (debug >= 2) {
      log(nodeList ? `peers: from the node list (${nodeList.nodes.length} nodes; this is ${nodeList.nodes[nodeList.index]})`
        : job.dht?.length ? `peers: from the DHT, bootstrapped from ${job.dht.join(' ')}` : `peers: from the tracker ${job.trackers.join(' ')}`)
    }
    const { agentKind, startAgent } = await import('../agent-choice.ts')
    const { agentOptions, nodeOptions } = await import('../agent-settings.ts')
    const mountPoint = expandTemplate(job.mountPoint, { infoHash: desc.infoHash, nodeName: node, launchId: launch.launchId })
    reuse = launch.shelf?.take(desc.infoHash)
    const options = agentOptions(settings, desc, mountPoint, {
      mode: settings.mode,
      node: { ...nodeOptions(settings, { trackers: job.trackers, seeders: job.seeders, dht: job.dht, dhtLookup: lookup, nodeList, secret, sources: job.sources }), reuseStore: reuse },
      keepStore: launch.shelf !== undefined,
      log
    })
    agent = await startAgent(options, agentKind(options, settings.agent))
    if (debug >= 2) log(`agent: ${agent.kind}`)
  } catch (err) {
    await lookup?.close() // not taken over by the node's discovery
    if (reuse) await rm(reuse.path, { recursive: true, force: true })
    await state.fail(failureOf(err))
    // Kept before the node's last rank removes the state; the error's line follows (same file).
    if (debug >= 1) await state.keepLog().catch(() => {})
    throw err
  }
  let startCpu: Usage | undefined
  // The CPU is the node's: this process's and its native agent's, if it has one (the bench reads it).
  const counters = async () => log(`stats ${JSON.stringify({ ...await agent.stats(), startCpu, cpu: plus(usageSince(usageFrom), agent.processUsage().all) })}`)
  const every = debug >= 2 ? setInterval(() => void counters(), DEBUG_STATS_MS) : undefined
  try {
    // What every rank runs with, for this mount: the rank steps (Node's and native) and Slurm's task hook read it.
    const { expandTaskEnv } = await import('./rank-env.ts')
    await state.ready({ mountPoint: agent.mountPoint, pid: process.pid, storePath: agent.storePath }, expandTaskEnv(job.taskEnv, agent.mountPoint))
    startCpu = plus(usageSince(usageFrom), agent.processUsage().start)
    log(`${agent.mountPoint} ready for the ranks on ${node}`)
    await (launch.untilStopped ? stop : Promise.race([stop, state.ranksEnded(launch.expect ?? 0)]))
  } finally {
    clearInterval(every)
    try {
      await agent.stop()
    } finally {
      const kept = agent.keptStore()
      if (kept) await launch.shelf?.put(kept) // the store, kept, is the shelf's to remove even if the unmount failed
    }
    if (debug >= 1) await counters()
    if (debug >= 1) await state.keepLog().catch(() => {})
    await state.remove()
  }
}

/**
 * `job` with the description in it, fetched here, when the node's agent is the native one and the
 * spec came without it (a Slurm job's: the SPANK plugin's buffer has no room): Slurm's prolog, a
 * Node process that ends once the agent is up, fetches it (peers first, as an agent would) and the
 * native node agent serves the job without a Node process of its own. Unchanged otherwise, or if
 * it does not fit the spec.
 */
export async function withDescription (job: JobSpec, node: string, log: (line: string) => void): Promise<JobSpec> {
  if (job.description !== undefined || job.node.agent !== 'native') return job
  const { parseJobSecret } = await import('../swarm/job-auth.ts')
  const secret = job.secret === undefined ? undefined : parseJobSecret(job.secret, `${JOB_ENV}'s secret`)
  const desc = await descriptionFor(job, secret, undefined, undefined, node, () => {}, log)
  const { peerShareable } = await import('../description.ts')
  const description = specDescription(peerShareable(desc))
  return description === undefined ? job : { ...job, description }
}

/**
 * The description by the first route that has it: the job spec, peers of the swarm (a job with a
 * secret), the head over HTTP. `route` hears which one.
 */
async function descriptionFor (job: JobSpec, secret: JobSecret | undefined, lookup: DhtLookup | undefined, nodeList: NodeList | undefined,
  node: string, route: (line: string) => void, log: (line: string) => void): Promise<Description> {
  const inSpec = await descriptionInSpec(job)
  if (inSpec) {
    route('description: from the job spec')
    return inSpec
  }
  const fromPeer = secret && await descriptionFromPeers(job, secret, lookup, nodeList, log)
  if (fromPeer) {
    route('description: from a peer')
    return fromPeer
  }
  const { withProof } = await import('../swarm/job-auth.ts')
  const fromHead = await fetchDescription(withProof(job.descriptionUrl, secret, 'description', Buffer.from(job.infoHash, 'hex')),
    job.infoHash, node, job.node.stallTimeoutMs)
  route('description: from the head')
  return fromHead
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
async function descriptionFromPeers (job: JobSpec, secret: JobSecret, lookup: DhtLookup | undefined, nodeList: NodeList | undefined,
  log: (line: string) => void): Promise<Description | undefined> {
  const { fetchDescriptionFromPeers } = await import('../swarm/description-exchange.ts')
  const { parseDescription } = await import('../description.ts')
  let desc: Description | undefined
  const bytes = await fetchDescriptionFromPeers({
    infoHash: Buffer.from(job.infoHash, 'hex'),
    secret,
    trackers: job.trackers,
    lookup,
    // With a node list, the peers it gives this node: each holds the description once it has joined.
    peers: nodeList && (await import('../swarm/node-list.ts')).peersOf(nodeList, Buffer.from(job.infoHash, 'hex')),
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


/** This process's CPU (seconds) and context switches so far. */
function usageNow (): Usage {
  const r = process.resourceUsage()
  return { user: r.userCPUTime / 1e6, system: r.systemCPUTime / 1e6, voluntary: r.voluntaryContextSwitches, involuntary: r.involuntaryContextSwitches }
}

/** What this launch cost the process (until its mount was ready: startCpu; in all: cpu): from its start, or from the hand-off for a lingering agent's. */
function usageSince (from: Usage): Usage {
  const now = usageNow()
  return { user: now.user - from.user, system: now.system - from.system, voluntary: now.voluntary - from.voluntary, involuntary: now.involuntary - from.involuntary }
}

function plus (a: Usage, b: Usage | undefined): Usage {
  return b ? { user: a.user + b.user, system: a.system + b.system, voluntary: a.voluntary + b.voluntary, involuntary: a.involuntary + b.involuntary } : a
}

/** How often an agent logs its counters at P2PRUN_DEBUG=2. */
const DEBUG_STATS_MS = 5000

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
