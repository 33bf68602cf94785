// The native node agent (native/agent/, dist/p2prun-agent) serving a mount for this process: a
// launch's `p2prun node-agent` and `p2prun mount` keep their part (the description's route, the
// node state, the ranks, records and signals) and hand the data path, the swarm and the FUSE
// server, to it: in C an agent's whole life costs less than half the Node one's CPU
// (bench/README.md). It takes what the Node agent would: the options as flags, the description
// (as peers may have it: it hands it on to nodes that lack it) on its standard input, the secret
// in its environment. It says `ok` or its failure on a pipe, and its counters on stdout when asked
// (SIGUSR1) and when it ends.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { createInterface } from 'node:readline'
import type { AgentOptions, RunningAgent, Usage } from './agent.ts'
import { peerShareable } from './description.ts'
import { builtDistFile, distFile, NATIVE_AGENT_FILE } from './dist-files.ts'
import { P2prunError } from './errors.ts'
import { readyLine, stopChild } from './session/process.ts'
import { envWithSecret } from './swarm/job-auth.ts'
import { dialsHead, HEAD_FALLBACK_MS, peersOf, type NodeList } from './swarm/node-list.ts'
import { hostPort } from './swarm/peer-address.ts'

/** What p2prun-agent's --max-conns takes at most (native/agent/agent.h MAX_CONNS). */
const MAX_CONNS = 120
/** Trackers, seeders and source directories it takes at most, each (native/agent/description.h MAX_ADDRESSES). */
const MAX_ADDRESSES = 16
/** How long a stopped agent may take to unmount and tell the tracker before it is killed. */
const STOP_WAIT_MS = 15_000

/** What a mount asks of its agent that decides which agent it can be: where its peers come from, its store's life. */
export type AgentNeeds = Pick<AgentOptions, 'node' | 'description' | 'keepStore'>

/** What of `options` the native agent does not do, as "it does not do …" ends; undefined: it serves them all. */
export function nativeRefusal (options: AgentNeeds): string | undefined {
  const { node, description } = options
  // A node list replaces the tracker and the DHT (lib/swarm/node.ts): its peers are flags.
  if (!node.nodeList && (node.dht?.length || node.dhtLookup || description.dhtNodes.length)) return 'the DHT'
  if (node.maxConns > MAX_CONNS) return `more than ${MAX_CONNS} connections`
  // A launch's native agent lingers with its store itself (native/agent/linger.c); this is `mount --keep-store`'s, and a Node agent's that lingers.
  if (options.keepStore || node.reuseStore) return 'a store kept once unmounted (--keep-store)'
  if ((node.trackers ?? description.trackers).length > MAX_ADDRESSES || [...description.seeders, ...node.seeders ?? []].length > MAX_ADDRESSES ||
    (node.fallback?.dirs.length ?? 0) > MAX_ADDRESSES) return `more than ${MAX_ADDRESSES} trackers, seeders or source directories`
  if (!builtDistFile(NATIVE_AGENT_FILE)) return `anything here: ${distFile(NATIVE_AGENT_FILE)} is not built`
  return undefined
}

/**
 * p2prun-agent's flags for a node of a node list (node-list.ts's policy, applied here): it listens
 * at its own entry, asks no tracker, dials the peers the policy picks for it, and dials the head at
 * start or only once a wait stalls for `headFallbackMs`.
 */
export function nodeListFlags (list: NodeList, infoHash: Uint8Array, port: number, headFallbackMs = HEAD_FALLBACK_MS): string[] {
  return [
    '--port', String(hostPort(list.nodes[list.index] as string)?.port ?? port), '--no-trackers',
    ...peersOf(list, infoHash).flatMap((address) => ['--peer', address]),
    ...(dialsHead(list.nodes.length, list.index) ? [] : ['--head-fallback', String(headFallbackMs / 1000)])
  ]
}

/** Where the peers come from: the trackers, or a node list's. */
function discoveryFlags (options: AgentOptions): string[] {
  const { node, description } = options
  if (!node.nodeList) return ['--port', String(node.port), ...(node.trackers ?? description.trackers).flatMap((url) => ['--tracker', url])]
  return nodeListFlags(node.nodeList, Buffer.from(description.infoHash, 'hex'), node.port, node.headFallbackMs)
}

/** p2prun-agent's flags for `options` (nativeRefusal said it serves them), but where it reports. */
function flags (options: AgentOptions): string[] {
  const { node } = options
  return [
    'mount', '-', options.mountPoint, '--notify-fd', '3', '--mode', options.mode,
    '--store-dir', node.storeDir, '--max-conns', String(node.maxConns), '--numwant', String(node.numwant),
    '--stall-timeout', String(node.stallTimeoutMs / 1000), '--owner', `${options.uid}:${options.gid}`, '--fuse-device', options.fuseDevice,
    ...(options.allowOther ? ['--allow-other'] : []),
    ...discoveryFlags(options),
    // Its description is the peer-shareable one (which it hands on): where the swarm is comes from here.
    ...[...options.description.seeders, ...node.seeders ?? []].flatMap((address) => ['--seeder', address]),
    // lib/source-layout.ts's layout: the set's directory, or NAME=DIR for each top directory of several.
    ...(node.fallback?.dirs ?? []).flatMap(({ name, dir }) => ['--source', name === '' ? dir : `${name}=${dir}`])
  ]
}

/**
 * Checks what the store and the mount need (as the Node agent would: file-systems.ts, mount.ts),
 * then starts p2prun-agent with `extra` flags: stdin (a pipe, the description) and fd 3 (its `ok`
 * or failure) are ours.
 */
async function spawnNative (options: AgentOptions, extra: readonly string[], spawnOptions: SpawnOptions): Promise<ChildProcess> {
  const program = builtDistFile(NATIVE_AGENT_FILE)
  if (!program) throw new P2prunError('LAUNCH', `${distFile(NATIVE_AGENT_FILE)} is missing`, { hint: 'rebuild p2prun (npm ci), or set agent to node' })
  ;(await import('./file-systems.ts')).checkStoreDir(options.node.storeDir, options.description.totalBytes)
  await (await import('./mount.ts')).checkMountable(options.mountPoint, options.fuseDevice)
  const child = spawn(program, [...flags(options), ...extra], { ...spawnOptions, env: envWithSecret(options.node.secret) })
  // One that cannot start, or ends before it read its input, says so by closing fd 3 (readyLine).
  child.on('error', () => {})
  child.stdin?.on('error', () => {})
  child.stdin?.end(peerShareable(options.description))
  return child
}

/**
 * `p2prun mount --daemon` without a Node process that stays: the native agent detached, its output
 * in `logFd`; returns its pid once its mount is up (readyLine: its failure, thrown).
 */
export async function detachNative (options: AgentOptions, logFd: number, files: { readyFile?: string, stats?: string }): Promise<number> {
  const child = await spawnNative(options, [...files.readyFile ? ['--ready-file', files.readyFile] : [], ...files.stats ? ['--stats', files.stats] : []],
    { detached: true, stdio: ['pipe', logFd, logFd, 'pipe'] })
  await readyLine(child, () => new P2prunError('FUSE', 'the native mount agent exited before it was ready', { hint: 'its log says why' }))
  child.unref()
  return child.pid as number
}

/** A JSON object the agent printed; undefined for any other line. */
function parsed<T extends object> (line: string): T | undefined {
  try {
    const value: unknown = JSON.parse(line)
    return typeof value === 'object' && value !== null ? value as T : undefined
  } catch {
    return undefined
  }
}

export class NativeAgent implements RunningAgent {
  readonly kind = 'native'
  readonly mountPoint: string
  /** Its store is unlinked as soon as it is made: nothing to remove after it. */
  readonly storePath = undefined
  private readonly child: ChildProcess
  private readonly exited: Promise<void>
  private counters: { readonly cpu?: Usage, readonly [member: string]: unknown } | undefined
  private readonly asking: ((counters: object | undefined) => void)[] = []
  private startUsage: Usage | undefined
  private stopping: Promise<void> | undefined

  static async start (options: AgentOptions): Promise<NativeAgent> {
    const child = await spawnNative(options, ['--die-with-parent', '--stats', '-'], { stdio: ['pipe', 'pipe', 'pipe', 'pipe'] })
    const agent = new NativeAgent(options, child)
    try {
      // `ok` and what starting cost it
      agent.startUsage = parsed<Usage>(await readyLine(child, () => new P2prunError('LAUNCH', 'the native agent ended before its mount was ready',
        { hint: 'its log says why; set agent to node to run the Node agent instead' })))
    } catch (err) {
      await agent.stop() // it is ending, or must: nothing of it is left when the failure is told
      throw err
    }
    return agent
  }

  private constructor (options: AgentOptions, child: ChildProcess) {
    this.mountPoint = options.mountPoint
    this.child = child
    // Its lines are the agent's log; its last stdout line, once it ended, its counters.
    createInterface({ input: child.stderr! }).on('line', (line) => options.log(line.replace(/^p2prun-agent: /, '')))
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const counters = parsed<object>(line)
      if (!counters) return // "mounted …"
      // In the Node agent's shape (AgentStats): what the mount is, then the members both count.
      this.counters = { infoHash: options.description.infoHash, mode: options.mode, mountPoint: options.mountPoint, ...counters }
      for (const answer of this.asking.splice(0)) answer(this.counters)
    })
    this.exited = new Promise((resolve) => {
      if (child.pid === undefined) resolve() // it never started (spawnNative's 'error')
      child.on('close', (code, signal) => {
        if (!this.stopping) options.log(`the native agent ended (${signal ?? `code ${code}`}) before it was stopped`)
        for (const answer of this.asking.splice(0)) answer(this.counters)
        resolve()
      })
    })
  }

  /** Its counters as `p2prun-agent --stats` writes them: asked for (SIGUSR1) while it runs, its last once it ended. */
  stats (): Promise<object | undefined> {
    if (this.child.pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve(this.counters)
    return new Promise((resolve) => {
      this.asking.push(resolve)
      this.child.kill('SIGUSR1')
    })
  }

  processUsage (): { start?: Usage, all?: Usage } {
    return { start: this.startUsage, all: this.counters?.cpu }
  }

  keptStore (): undefined {
    return undefined
  }

  /** It unmounts and leaves the swarm on SIGTERM; one that does not in time is killed, its mount removed. */
  stop (): Promise<void> {
    this.stopping ??= (async () => {
      if (!await stopChild(this.child, this.exited, STOP_WAIT_MS)) return
      const { isMounted, lazyUnmount } = await import('./mount.ts')
      if (await isMounted(this.mountPoint)) await lazyUnmount(this.mountPoint)
    })()
    return this.stopping
  }
}
