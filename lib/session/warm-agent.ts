// A node agent that outlives its launch. Started per launch, an agent spends ~0.27 CPU-s and ~0.3 s
// before its mount is up (Node's start, the bundle, V8's first compiles: bench/README), on every
// node of every launch. With `agent-linger` set, it stays that long after its last launch ended,
// listening on a socket in the run directory (node-state.ts's warmAgentFiles), and the node's next
// launch by the same user is handed to it: it joins that swarm and mounts that set in-process. The
// run directory is the user's own (0700), so only the user's ranks can hand it a launch.
//
// The hand-off, owned here and written byte for byte by native/rank-step.c as well: the node's
// first rank connects and sends NUL-terminated strings — HANDOFF_MAGIC, the node's name, the
// launch's id, its rank count on the node, then NAME=VALUE for each variable of the rank's
// environment (the job spec, P2PRUN_JOB, among them) — and one more NUL to end them. The agent
// answers "ok\n" once it has taken the launch, or "no REASON\n", or closes: then the rank starts an
// agent of its own, as without a lingering one. After "ok" the rank holds the connection until the
// mount is ready: if it closes first, the agent died, and the rank records the node's failure, as it
// does for a spawned agent that exits early.
import { createWriteStream } from 'node:fs'
import { chmod, rm } from 'node:fs/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { formatError } from '../errors.ts'
import { decodeJob, JOB_ENV } from './job-spec.ts'
import type { KeptStore } from '../swarm/node.ts'
import { runAgent, agentLost, type AgentLaunch, type StoreShelf } from './node.ts'
import { NodeState, readWarmAgentRecord, removeWarmAgentRecord, warmAgentFiles, writeWarmAgentRecord } from './node-state.ts'

export const HANDOFF_MAGIC = 'p2prun-launch 1'

/** What a rank hands over: the launch as `node-agent`'s arguments name it, and the rank's environment. */
export interface Handoff {
  readonly node: string
  readonly launchId: string
  readonly expect: number
  readonly env: NodeJS.ProcessEnv
}

/** A hand-off's environment may carry the description (64 KB) and more: bounded, not unbounded. */
const HANDOFF_MAX = 4 << 20

/** The longest path a Unix socket may have (sun_path, with its NUL). */
const SOCKET_PATH_MAX = 107

export function encodeHandoff (h: Handoff): Buffer {
  const env = Object.entries(h.env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`)
  return Buffer.from([HANDOFF_MAGIC, h.node, h.launchId, String(h.expect), ...env, ''].map((s) => `${s}\0`).join(''))
}

/** The hand-off in `bytes`: undefined while it is incomplete; throws if it is not one. */
export function decodeHandoff (bytes: Buffer): Handoff | undefined {
  const end = bytes.indexOf('\0\0')
  if (end < 0) {
    if (bytes.length > HANDOFF_MAX) throw new Error(`a hand-off of more than ${HANDOFF_MAX} bytes`)
    return undefined
  }
  const [magic, node, launchId, expect, ...vars] = bytes.subarray(0, end).toString('utf8').split('\0')
  if (magic !== HANDOFF_MAGIC) throw new Error(`not a hand-off of this p2prun (${JSON.stringify(magic?.slice(0, 40))})`)
  if (!node || !launchId || !/^\d+$/.test(expect ?? '')) throw new Error('a hand-off without its node, launch id or rank count')
  const env: NodeJS.ProcessEnv = {}
  for (const v of vars) {
    const eq = v.indexOf('=')
    if (eq > 0) env[v.slice(0, eq)] = v.slice(eq + 1)
  }
  return { node, launchId, expect: Number(expect), env }
}

const NOT_ANSWERED = '\0not answered'

/** A launch a lingering agent took: `release` once the rank no longer waits for its mount. */
export interface Handed {
  release (): void
}

/**
 * The first rank's side: hands `h` to the node's lingering agent, if there is one and it takes it.
 * Until released, the connection is held: if the agent closes it, its failure is recorded in `state`.
 * An agent that does not answer within `timeoutMs` may still take the launch, so no other may be
 * started: that is the node's failure, recorded in `state`.
 */
export async function handToWarmAgent (runDir: string, h: Handoff, state: NodeState, timeoutMs: number): Promise<Handed | undefined> {
  const files = warmAgentFiles(runDir, h.node)
  if (files.socket.length > SOCKET_PATH_MAX) return undefined
  const socket = connect(files.socket)
  const answer = await new Promise<string | undefined>((resolve) => {
    let text = ''
    socket.on('error', () => resolve(undefined)) // none there (ENOENT), or a dead one's socket (ECONNREFUSED)
    socket.on('close', () => resolve(undefined))
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (text.includes('\n')) resolve(text.slice(0, text.indexOf('\n')))
    })
    socket.on('connect', () => {
      socket.write(encodeHandoff(h))
      socket.setTimeout(timeoutMs, () => resolve(NOT_ANSWERED))
    })
  })
  if (answer === NOT_ANSWERED) {
    socket.destroy()
    await state.fail({ code: 'LAUNCH', message: 'the lingering node agent did not answer its hand-off in time', hint: `${files.record} names it: stop it, or set P2PRUN_AGENT_LINGER=0` })
    return { release: () => {} }
  }
  if (answer !== 'ok') {
    socket.destroy()
    return undefined
  }
  socket.setTimeout(0)
  socket.removeAllListeners('data')
  socket.removeAllListeners('close')
  const lost = () => agentLost(state, 'the lingering node agent ended before its mount was ready')
  socket.on('close', lost)
  return { release: () => { socket.off('close', lost); socket.destroy() } }
}

/**
 * The agent's side (`p2prun node-agent` with agent-linger set): serves `first`, takes the launches
 * ranks hand it meanwhile and for `lingerMs` after the last one ended, then returns. `stop` (a
 * signal) ends every launch and the lingering. If another agent already lingers for this node, or
 * the socket's path is too long, it serves `first` alone. A failure of `first` is thrown once the
 * others have ended; one of a handed launch is that launch's, recorded in its node state.
 */
export async function serveLaunches (first: AgentLaunch, stop: Promise<unknown>, lingerMs: number, log: (line: string) => void): Promise<void> {
  const files = warmAgentFiles(first.job.node.runDir, first.node)
  const server = await listenUnix(files)
  if (!server) return await runAgent(first, stop, log)
  process.chdir('/') // it outlives the launch: it keeps no directory busy (the spec's paths are absolute)
  let busy = 0
  let idle: NodeJS.Timeout | undefined
  let leaving = false
  let left: () => void = () => {}
  const gone = new Promise<void>((resolve) => { left = resolve })
  const leave = async () => {
    if (leaving) return
    leaving = true
    clearTimeout(idle)
    await removeWarmAgentRecord(files.record)
    // libuv unlinks the path before it closes the listening socket: a new agent probing the path
    // meanwhile finds it alive and leaves it, so this close never removes another agent's socket. A
    // rank whose connection was still queued sees it end unanswered and starts an agent of its own.
    server.close()
    if (busy === 0) left()
  }
  const hold = () => { busy++; clearTimeout(idle) }
  const release = () => {
    if (--busy > 0) return
    if (leaving) left()
    else idle = setTimeout(() => { void leave() }, lingerMs)
  }
  void stop.then(leave)
  // The record names the kept store, for an agent that finds this one dead to remove it.
  const slurmJob = first.env.SLURM_JOB_ID
  const record = (store?: string) => writeWarmAgentRecord(files.record, { pid: process.pid, socket: files.socket, store, slurmJob })
  const shelf = new Shelf((store) => leaving ? Promise.resolve() : record(store))
  server.on('connection', (socket) => {
    hold()
    takeHandoff(socket, stop, shelf, slurmJob).finally(release)
  })
  await record()
  hold()
  let failed: unknown
  await runAgent({ ...first, shelf }, stop, log).catch((err: unknown) => {
    failed = err
    void leave() // an agent that could not serve its own launch is no agent to hand launches to
  }).finally(release)
  await gone
  await shelf.clear()
  if (failed) throw failed
}

/**
 * The store of the set last served, kept while the agent lingers: the same set's next launch on
 * the node then fetches nothing (a job script that runs one program several times). One at a time:
 * a launch of another set drops it, so a lingering agent holds at most one set's bytes beyond
 * those of the launches it serves.
 */
class Shelf implements StoreShelf {
  private kept: KeptStore | undefined
  private readonly changed: (store: string | undefined) => Promise<void>

  /** `changed` hears which store is kept now. */
  constructor (changed: (store: string | undefined) => Promise<void>) {
    this.changed = changed
  }

  take (infoHash: string): KeptStore | undefined {
    const kept = this.kept
    this.kept = undefined
    if (kept && kept.infoHash !== infoHash) {
      void removeStore(kept)
      return undefined
    }
    return kept
  }

  async put (store: KeptStore): Promise<void> {
    const old = this.kept
    this.kept = store
    await this.changed(store.path)
    if (old) await removeStore(old)
  }

  async clear (): Promise<void> {
    if (this.kept) await removeStore(this.kept)
    this.kept = undefined
  }
}

const removeStore = (store: KeptStore) => rm(store.path, { recursive: true, force: true })

/**
 * Listens on the socket, replacing a dead agent's (and removing the store it kept); undefined if a
 * live agent listens there.
 */
async function listenUnix ({ socket: file, record }: { socket: string, record: string }): Promise<Server | undefined> {
  if (file.length > SOCKET_PATH_MAX) return undefined
  const server = createServer()
  for (let attempt = 0; ; attempt++) {
    const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once('error', resolve)
      server.listen(file, () => { server.off('error', resolve); resolve(undefined) })
    })
    if (!err) break
    if (err.code !== 'EADDRINUSE' || attempt > 0 || await answers(file)) return undefined
    const dead = await readWarmAgentRecord(record)
    if (dead?.store) await rm(dead.store, { recursive: true, force: true })
    await rm(file, { force: true })
  }
  await chmod(file, 0o600)
  return server
}

/** Whether something listens on the Unix socket `file`. */
function answers (file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(file)
    probe.on('connect', () => { probe.destroy(); resolve(true) })
    probe.on('error', () => resolve(false))
  })
}

/** One connection: its hand-off read, answered, and its launch served to the end. */
async function takeHandoff (socket: Socket, stop: Promise<unknown>, shelf: StoreShelf, slurmJob: string | undefined): Promise<void> {
  socket.on('error', () => {}) // a rank that left: its launch goes on
  let handoff: Handoff
  try {
    handoff = await readHandoff(socket)
  } catch (err) {
    socket.end(`no ${(err as Error).message}\n`)
    return
  }
  // Started by a Slurm job's launch, the agent ends with that job (its epilog): another job's launch
  // must not depend on it.
  if (handoff.env.SLURM_JOB_ID !== slurmJob) {
    socket.end(`no this agent serves ${slurmJob ? `Slurm job ${slurmJob}` : 'launches outside Slurm jobs'}\n`)
    return
  }
  let launch: AgentLaunch
  try {
    launch = { job: decodeJob(handoff.env[JOB_ENV]), node: handoff.node, launchId: handoff.launchId, expect: handoff.expect, env: handoff.env, handed: true, shelf }
  } catch (err) {
    // The rank's own agent reports a bad spec in its words, as it would without this one.
    socket.end(`no ${formatError(err)}\n`)
    return
  }
  const state = NodeState.of(launch.job.node.runDir, launch.launchId, launch.node)
  const out = createWriteStream(state.logFile, { flags: 'a' })
  out.on('error', () => {}) // the state removed at the launch's end: nothing left to log to
  socket.write('ok\n')
  try {
    await runAgent(launch, stop, (line) => out.write(`p2prun node-agent: ${line}\n`))
  } catch {
    // Recorded in the launch's node state by runAgent, for its ranks.
  } finally {
    socket.destroy()
    out.end()
  }
}

/** How long a connection may take to send its hand-off: one that sends nothing must not keep the agent. */
const HANDOFF_TIMEOUT_MS = 10_000

function readHandoff (socket: Socket): Promise<Handoff> {
  return new Promise((resolve, reject) => {
    socket.setTimeout(HANDOFF_TIMEOUT_MS, () => reject(new Error(`no hand-off in ${HANDOFF_TIMEOUT_MS / 1000} s`)))
    let bytes = Buffer.alloc(0)
    const onData = (d: Buffer) => {
      bytes = Buffer.concat([bytes, d])
      try {
        const h = decodeHandoff(bytes)
        if (h) { socket.off('data', onData); socket.setTimeout(0); resolve(h) }
      } catch (err) {
        socket.off('data', onData)
        reject(err)
      }
    }
    socket.on('data', onData)
    socket.once('end', () => reject(new Error('the rank closed before its hand-off was whole')))
  })
}
