// Discovery from the job's own node list: every node is given the same list of where the job's
// agents listen (host:port, in job order) and its own place in it, and dials the peers this module
// picks for it. No tracker, no DHT: the head does no work per node, and only a few nodes dial its
// seeder; the others get every piece from the swarm, and dial the head only when something waits
// without progress (a read, an open, eager mode's fetch of the set: SwarmNode's head fallback).
// The one owner of the list's format and of the policy, which bench/model simulates as it is here.
import { readFile } from 'node:fs/promises'
import { usageError } from '../errors.ts'
import { hostPort } from './peer-address.ts'

export interface NodeList {
  /** host:port where each of the job's agents listens, in job order: the same list on every node. */
  readonly nodes: readonly string[]
  /** This node's place in `nodes`: it listens there. */
  readonly index: number
}

/**
 * Random peers a node dials besides its ring neighbours, so that the graph has no bottleneck. Few:
 * every connection costs both ends a stream and its haves; at 32 nodes 8 of them (a degree of ~26)
 * cost each agent 0.39-0.44 CPU-s against 0.34-0.38 with 3 (bench/README.md, 2026-12-04 18:47).
 */
const RANDOM_PEERS = 3
/** Nodes that dial the head's seeder: spread evenly over the list. The head sends each piece to one node at a time, so a few suffice. */
export const HEAD_DIALERS = 32
/** A node that did not dial the head at start dials it once a wait made no progress for this long. */
export const HEAD_FALLBACK_MS = 3000

/**
 * The places in the list node `index` dials: the nodes 1, 2, 4, 8… places after it (around the
 * ring: any node reaches any other in log2(N) hops) and RANDOM_PEERS others drawn from `seed`
 * (the infohash: the same graph on every node, another for each set). Others dial it in turn, so
 * its degree is about twice this.
 */
export function listedPeers (count: number, index: number, seed: Uint8Array): number[] {
  const out = new Set<number>()
  for (let d = 1; d < count; d *= 2) out.add((index + d) % count)
  const want = Math.min(count - 1, out.size + RANDOM_PEERS)
  const next = xorshift(seedOf(seed) ^ Math.imul(index + 1, 0x9e3779b9))
  while (out.size < want) {
    const v = next() % count
    if (v !== index) out.add(v)
  }
  return [...out]
}

/** The addresses of the peers node `list.index` dials. */
export function peersOf (list: NodeList, seed: Uint8Array): string[] {
  return listedPeers(list.nodes.length, list.index, seed).map((i) => list.nodes[i] as string)
}

/** Whether node `index` of `count` dials the head's seeder at start (every node, up to HEAD_DIALERS of them). */
export function dialsHead (count: number, index: number): boolean {
  return index % Math.ceil(count / HEAD_DIALERS) === 0
}

/** The node list, from a file of one host:port per line (blank lines and # comments skipped); `index` is this node's line among them. */
export async function readNodeList (file: string, index: number): Promise<NodeList> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw usageError(`cannot read the node list ${file}: ${(err as NodeJS.ErrnoException).code}`, 'pass --node-list a file of host:port lines, one per node')
  }
  const nodes = text.split('\n').map((line) => line.replace(/#.*/, '').trim()).filter((line) => line !== '')
  return nodeListOf(nodes, index, file)
}

/** A node list checked: every entry host:port, none twice, `index` one of them. */
export function nodeListOf (nodes: readonly string[], index: number, where = 'the node list'): NodeList {
  if (nodes.length === 0) throw usageError(`${where} names no node`, 'list one host:port per node, in job order')
  const seen = new Set<string>()
  for (const [i, node] of nodes.entries()) {
    if (!hostPort(node)) throw usageError(`${where}, entry ${i + 1}: ${JSON.stringify(node)} is not host:port`, 'list where each node\'s agent listens, e.g. 10.0.0.7:6881')
    if (seen.has(node)) throw usageError(`${where} names ${node} twice`, 'list each node once')
    seen.add(node)
  }
  if (!Number.isInteger(index) || index < 0 || index >= nodes.length) {
    throw usageError(`node index ${index} is not in ${where} (${nodes.length} nodes)`, `pass --node-index from 0 to ${nodes.length - 1}: this node's line`)
  }
  return { nodes, index }
}

/**
 * Lists the node's peers once, at start: they are fixed for the job. Stands where the tracker's
 * Announcer does; a peer not up yet is redialed by Connections, and peer exchange adds more.
 */
export class NodeListDiscovery {
  private readonly list: NodeList
  private readonly seed: Uint8Array
  private readonly onPeers: (addresses: string[]) => void

  constructor (list: NodeList, seed: Uint8Array, onPeers: (addresses: string[]) => void) {
    this.list = list
    this.seed = seed
    this.onPeers = onPeers
  }

  start (): void {
    this.onPeers(peersOf(this.list, this.seed))
  }

  completed (): void {}

  async stop (): Promise<void> {}
}

function seedOf (bytes: Uint8Array): number {
  return ((bytes[0] ?? 0) << 24 | (bytes[1] ?? 0) << 16 | (bytes[2] ?? 0) << 8 | (bytes[3] ?? 0)) >>> 0
}

/** A small deterministic generator (Marsaglia's xorshift32): unsigned 32-bit values. */
function xorshift (seed: number): () => number {
  let x = (seed >>> 0) || 1
  return () => {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    return x >>> 0
  }
}
