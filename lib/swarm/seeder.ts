// The head's seeder: serves the source directory to the swarm, straight from the source files.
import type { SourceLayout } from '../source-layout.ts'
import { peerShareable, type Description } from '../description.ts'
import { sourceError } from '../errors.ts'
import { Announcer } from './announce.ts'
import { pieceSize } from './assembly.ts'
import { Bitfield } from './bitfield.ts'
import { Connections } from './connections.ts'
import { DescriptionServer, HEAD_DESC_PEERS } from './description-exchange.ts'
import { FanOut } from './fan-out.ts'
import type { JobSecret } from './job-auth.ts'
import { newPeerId } from './peer-id.ts'
import { PieceCache } from './piece-cache.ts'
import { unchokeAtOnce } from './unchoke.ts'
import { sourceFilesOf, sourceMatches, type SourceFiles } from './source-files.ts'
import { servable, type BlockRequest, type Wire } from './wire.ts'

/** Nodes this seeder has seen join (a node tells its pieces once it has the description), and those still connected. */
export interface HoldersSeen {
  readonly joined: number
  readonly connected: number
}

export interface SeederOptions {
  /**
   * Whether no node that has the description is left: the head then hands it to any who asks.
   * Told what this seeder has seen.
   */
  readonly noOtherHolder?: (seen: HoldersSeen) => boolean
  readonly host: string
  readonly port: number
  readonly trackers: readonly string[]
  readonly maxConns: number
  /** Hash every piece of the source even when sizes and mtimes match the description. */
  readonly verify: boolean
  /** Bytes per second the seeder may upload; 0 for no limit (emulates a slow head link). */
  readonly uploadLimit: number
  /**
   * The head sends each piece to one node at a time: another node asking for a piece the head
   * started sending less than this long ago gets a BEP 6 reject and fetches it from the first
   * node once that node has it. Without this, nodes that load the same libraries in the same
   * order all ask the head for the same piece at once. 0: off.
   */
  readonly deferToPeersMs: number
  /** The job's secret, which every peer must prove; undefined: open to any BitTorrent client. */
  readonly secret?: JobSecret
}

export interface Seeder {
  readonly port: number
  /** Whether the source was hashed at start (false: sizes and mtimes matched). */
  readonly verified: boolean
  uploaded (): number
  /** The most bytes sent to any one peer: how much of the set a node got from the head at worst. */
  maxToOnePeer (): number
  /** Bytes of the description handed to peers (p2prun_desc). */
  descriptionBytes (): number
  /** Once this resolves, the counters above are up to date (the native seeder's come from its process). */
  refresh (): Promise<void>
  close (): Promise<void>
}

/**
 * The longest the head waits for the node it sent a piece to to say it has it before sending the
 * piece to another: a node's own wait for an answer (node.ts).
 */
const CONFIRM_WAIT_MAX_MS = 10_000

/** Pieces read last: the blocks of a piece are asked for together, by one node (see deferToPeersMs). */
const CACHE_BYTES = 8 * 1024 * 1024

/** `warn` hears, once, that the source stopped matching the description while being served. */
export async function startSeeder (desc: Description, layout: SourceLayout, opts: SeederOptions, warn: (line: string) => void): Promise<Seeder> {
  const cheapMatch = await sourceMatches(desc, layout)
  const verify = opts.verify || !cheapMatch
  const source = sourceFilesOf(desc, layout)
  try {
    const bad = verify ? await source.countMismatches() : 0
    if (bad > 0) {
      throw sourceError(`${layout.dirs.map((d) => d.dir).join(', ')} does not match the description: ${bad} of ${desc.pieceCount} pieces differ`,
        'describe the directory again, or point --source at the directory it was described from')
    }
    const serving = new Serving(desc, source, opts, warn)
    const peerId = newPeerId('head')
    const infoHash = Buffer.from(desc.infoHash, 'hex')
    const noOtherHolder = opts.noOtherHolder
    const description = opts.secret && new DescriptionServer(peerShareable(desc), HEAD_DESC_PEERS, noOtherHolder && (() => noOtherHolder(serving.holdersSeen())))
    const connections = await Connections.listen({
      infoHash, peerId, pieceCount: desc.pieceCount, host: opts.host, port: opts.port, maxConns: opts.maxConns, dialTarget: 0, secret: opts.secret, learnPeers: false,
      handler: serving.handler(), onWire: (wire) => serving.onWire(wire), description
    })
    // The head announces only to be listed: nodes dial it, it dials no one.
    const announcer = new Announcer({
      trackers: opts.trackers, infoHash, peerId, port: connections.port, numwant: 1, secret: opts.secret,
      progress: () => ({ uploaded: serving.uploaded, downloaded: 0, left: 0 }),
      onPeers: () => {},
      onWarning: () => {}
    })
    announcer.start()
    let closing: Promise<void> | undefined
    return {
      port: connections.port,
      verified: verify,
      uploaded: () => serving.uploaded,
      maxToOnePeer: () => Math.max(0, ...serving.toPeer.values()),
      descriptionBytes: () => description ? description.sent : 0,
      refresh: async () => {},
      close: () => (closing ??= (async () => {
        await Promise.all([announcer.stop(), connections.close()])
        await source.close()
      })())
    }
  } catch (err) {
    await source.close()
    throw err
  }
}

/**
 * Answers the nodes' requests: deferred to peers, paced by the upload limit, from cache or source.
 * Every piece read from the source is hashed before it is sent: a file changed after it was
 * described (same size and mtime, other bytes) would otherwise be sent to every node, refused by
 * each, and asked for again without end.
 */
class Serving {
  uploaded = 0
  readonly toPeer = new Map<string, number>()
  /** Connected nodes that told their pieces (they joined: they have the description), and how many ever did. */
  private readonly holders = new Set<Wire>()
  private joined = 0
  private readonly desc: Description
  private readonly source: SourceFiles
  private readonly opts: SeederOptions
  private readonly all: Bitfield
  private readonly cache = new PieceCache(CACHE_BYTES)
  private readonly reading = new Map<number, Promise<Buffer>>()
  /** The node the head is sending each piece to: one at a time, for deferToPeersMs and until it has it. */
  private readonly fanOut: FanOut<Wire>
  /** The addresses each connection was referred to (refer). */
  private readonly referred = new WeakMap<Wire, Set<string>>()
  /** performance.now() from which the upload limit allows the next block. */
  private nextFree = 0
  /** Pieces whose source no longer hashes to the description: turned down without reading again. */
  private readonly changed = new Set<number>()
  private readonly warn: (line: string) => void
  private warned = false

  constructor (desc: Description, source: SourceFiles, opts: SeederOptions, warn: (line: string) => void) {
    this.desc = desc
    this.source = source
    this.opts = opts
    this.warn = warn
    this.all = Bitfield.full(desc.pieceCount)
    this.fanOut = new FanOut<Wire>(1, opts.deferToPeersMs, CONFIRM_WAIT_MAX_MS)
  }

  onWire (wire: Wire): void {
    wire.sendPieces(this.all)
  }

  holdersSeen (): HoldersSeen {
    return { joined: this.joined, connected: this.holders.size }
  }

  handler () {
    return {
      onPieces: (wire: Wire) => {
        if (this.holders.has(wire)) return
        this.holders.add(wire)
        this.joined++
      },
      onChoke: () => {},
      onInterested: unchokeAtOnce,
      onBlock: () => {},
      onReject: () => {},
      onClose: (wire: Wire) => { this.holders.delete(wire) },
      onRequest: (wire: Wire, req: BlockRequest) => this.serve(wire, req)
    }
  }

  private serve (wire: Wire, req: BlockRequest): void {
    if (!servable(req, pieceSize(this.desc, req.index)) || this.changed.has(req.index)) return wire.reject(req)
    // Another node is getting this piece from the head: this one gets it from that node, which it
    // is told of (ut_pex) in case it has no connection to it: nodes dial a few of the peers they
    // hear of, not all, and a node waiting on a piece none of its peers had waited the whole
    // deferral (2 s) for the head.
    if (!this.fanOut.admits(wire, req.index)) {
      wire.reject(req)
      this.refer(wire, req.index)
      return
    }
    this.piece(req.index).then((piece) => {
      const send = () => {
        const bytes = req.length
        this.uploaded += bytes
        this.toPeer.set(wire.peerId, (this.toPeer.get(wire.peerId) ?? 0) + bytes)
        wire.piece(req, piece.subarray(req.begin, req.begin + bytes))
      }
      const wait = this.pace(req.length)
      if (wait > 0) setTimeout(send, wait)
      else send()
    }, (err: Error) => {
      this.warnOnce(err.message)
      wire.reject(req)
    })
  }

  /** Tells `wire`'s node where the nodes piece `index` went instead listen, each once per connection. */
  private refer (wire: Wire, index: number): void {
    const told = this.referred.get(wire) ?? new Set<string>()
    this.referred.set(wire, told)
    const fresh: string[] = []
    for (const to of this.fanOut.recipients(index)) {
      const address = to.listenAddress
      if (address && to !== wire && !told.has(address)) { told.add(address); fresh.push(address) }
    }
    wire.pex(fresh, true)
  }

  /** Once, loudly: every node would otherwise log the same stall without knowing why. */
  private warnOnce (why: string): void {
    if (this.warned) return
    this.warned = true
    this.warn(`the source no longer matches the description: ${why}; such pieces are not served ` +
      '(describe the directory again and restart the job)')
  }

  /** ms to wait before sending `bytes` so the upload stays within the limit. */
  private pace (bytes: number): number {
    if (this.opts.uploadLimit <= 0) return 0
    const now = performance.now()
    const start = Math.max(now, this.nextFree)
    this.nextFree = start + (bytes * 1000) / this.opts.uploadLimit
    return start - now
  }

  private piece (index: number): Promise<Buffer> {
    const cached = this.cache.get(index)
    if (cached) return Promise.resolve(cached)
    let read = this.reading.get(index)
    if (!read) {
      read = this.source.readPiece(index).then((data) => {
        if (this.source.matches(index, data)) return data
        this.changed.add(index)
        throw new Error(`piece ${index} (${this.source.filesOf(index).map((f) => f.path).join(', ')}) has other bytes`)
      })
      this.reading.set(index, read)
      read.then((data) => this.cache.put(index, data), () => {}).finally(() => this.reading.delete(index))
    }
    return read
  }
}
