// The description from peers instead of the head: at 16,000 nodes the head would otherwise send it
// 16,000 times (tens of KB each, more than the library set itself). Every node that joined the
// swarm has it and hands it on (extensions.ts: BEP 9's messages under the name p2prun_desc); a
// node without it asks the tracker for peers without registering (everyone registered has it),
// fetches it from one, and checks it against the infohash its job gave it. The head hands it to
// its first few askers only; so the copies spread as a tree whose fan-out each holder caps.
import net from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { peekPeers } from './announce.ts'
import type { DhtLookup } from './dht.ts'
import { DESC_PIECE, type DescMessage } from './extensions.ts'
import type { JobSecret } from './job-auth.ts'
import { hostPort } from './peer-address.ts'
import { newPeerId } from './peer-id.ts'
import { Wire, type WireHandler } from './wire.ts'

/** Distinct peers a node hands the description to: the fan-out of the tree it spreads by. */
export const NODE_DESC_PEERS = 16
/** Distinct peers the head hands it to; after them, peers have it. */
export const HEAD_DESC_PEERS = 4

/**
 * Answers p2prun_desc requests with `bytes`, for at most `maxPeers` distinct peers, and for more
 * while `noOtherHolder` says no one else could (the head, when every node that had the
 * description has left: their ranks ended); refuses the rest, who then ask other peers (those
 * served first join in a moment).
 */
export class DescriptionServer {
  private readonly bytes: Buffer
  private readonly maxPeers: number
  private readonly noOtherHolder: () => boolean
  private readonly served = new Set<string>()
  /** Bytes of the description sent. */
  sent = 0

  constructor (bytes: Buffer, maxPeers: number, noOtherHolder: () => boolean = () => false) {
    this.bytes = bytes
    this.maxPeers = maxPeers
    this.noOtherHolder = noOtherHolder
  }

  get size (): number {
    return this.bytes.length
  }

  onDesc (wire: Wire, msg: DescMessage): void {
    if (msg.type !== 'request') return
    const start = msg.piece * DESC_PIECE
    if (start >= this.bytes.length || (!this.served.has(wire.peerId) && this.served.size >= this.maxPeers && !this.noOtherHolder())) {
      wire.desc({ type: 'reject', piece: msg.piece })
      return
    }
    this.served.add(wire.peerId)
    const data = this.bytes.subarray(start, start + DESC_PIECE)
    if (wire.desc({ type: 'data', piece: msg.piece, totalSize: this.bytes.length, data })) this.sent += data.length
  }
}

export interface FetchDescriptionOptions {
  readonly infoHash: Buffer
  readonly secret: JobSecret
  readonly trackers: readonly string[]
  /** The node's DHT node (the caller's), where holders are listed instead of at trackers. */
  readonly lookup?: DhtLookup
  /** Peers that may hold it, asked as listed ones are: the node list's (a peer joins once it has it). */
  readonly peers?: readonly string[]
  /** The head's seeder: asked when the tracker cannot be. */
  readonly seeders: readonly string[]
  /** Gives up (undefined) after this long: the caller then asks the head directly. */
  readonly deadlineMs: number
  /** Whether the bytes are the description the job means (its info dictionary has the infohash). */
  readonly accept: (bytes: Buffer) => boolean
}

const PEER_TIMEOUT_MS = 3000
const PEEK_PEERS = 20
/** Between rounds: the first askers wait for the head's first holders to join, then for theirs. */
const RETRY_MS = 150
const RETRY_MAX_MS = 2000

/** The description from peers, or undefined if none handed it over before the deadline. */
export async function fetchDescriptionFromPeers (opts: FetchDescriptionOptions): Promise<Buffer | undefined> {
  // An id of its own: this short connection is not the node that joins afterwards.
  const peerId = newPeerId('node')
  const deadline = performance.now() + opts.deadlineMs
  const dht = opts.lookup
  for (let round = 0; performance.now() < deadline; round++) {
    const listed = (await Promise.all([
      ...opts.trackers.map((t) => peekPeers(t, { infoHash: opts.infoHash, peerId, secret: opts.secret, numwant: PEEK_PEERS, timeoutMs: PEER_TIMEOUT_MS })),
      ...(dht ? [dht.peers(opts.infoHash, PEER_TIMEOUT_MS).then((holders) => holders.slice(0, PEEK_PEERS))] : [])
    ].map((listing) => listing.catch(() => [])))).flat().concat(opts.peers ?? [])
    // The head last: it hands the description to its first few askers only.
    const candidates = [...new Set([...shuffle(listed.filter((a) => !opts.seeders.includes(a))), ...opts.seeders])]
    for (const address of candidates) {
      if (performance.now() >= deadline) break
      const bytes = await fetchFrom(address, peerId, opts).catch(() => undefined)
      if (bytes && opts.accept(bytes)) return bytes
    }
    await delay(Math.min(RETRY_MS * 2 ** round, RETRY_MAX_MS) * (0.5 + Math.random()))
  }
  return undefined
}

/** The description from one peer: dial, handshake with the job's proof, ask for every piece. */
async function fetchFrom (address: string, peerId: Buffer, opts: FetchDescriptionOptions): Promise<Buffer | undefined> {
  const target = hostPort(address)
  if (!target) return undefined
  const socket = net.connect(target)
  const wire = new Wire(socket, {
    infoHash: opts.infoHash, peerId, pieceCount: 0, outgoing: true, timeoutMs: PEER_TIMEOUT_MS, secret: opts.secret, descOnly: true
  })
  socket.on('data', (chunk: Buffer) => wire.receive(chunk, false))
  const timer = setTimeout(() => wire.destroy('no description in time'), PEER_TIMEOUT_MS)
  try {
    await wire.ready
    const size = wire.peerDescSize
    if (size === undefined) return undefined
    const pieces: (Buffer | undefined)[] = new Array(Math.ceil(size / DESC_PIECE)).fill(undefined)
    return await new Promise<Buffer | undefined>((resolve) => {
      let missing = pieces.length
      wire.attach(descHandler((msg) => {
        if (msg.type === 'reject') return resolve(undefined)
        if (msg.type !== 'data' || msg.totalSize !== size || pieces[msg.piece] !== undefined || msg.piece >= pieces.length) return
        const expected = Math.min(DESC_PIECE, size - msg.piece * DESC_PIECE)
        if (msg.data.length !== expected) return resolve(undefined)
        pieces[msg.piece] = Buffer.from(msg.data)
        if (--missing === 0) resolve(Buffer.concat(pieces as Buffer[]))
      }, () => resolve(undefined)))
      for (let piece = 0; piece < pieces.length; piece++) wire.desc({ type: 'request', piece })
    })
  } finally {
    clearTimeout(timer)
    wire.destroy()
  }
}

function descHandler (onDesc: (msg: DescMessage) => void, onClose: () => void): WireHandler {
  const none = () => {}
  return { onPieces: none, onChoke: none, onInterested: none, onRequest: none, onBlock: none, onReject: none, onClose, onDesc: (_w, msg) => onDesc(msg) }
}

function shuffle<T> (items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j] as T, items[i] as T]
  }
  return items
}
