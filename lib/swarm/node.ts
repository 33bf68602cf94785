// A node's membership in the job's swarm, exposed as a ByteSource: "bytes [offset, length) of file
// F" and "all of file F", each waiting only for the pieces that cover it. The set's bytes live in
// one file in the store directory (memory-backed /dev/shm by default), mapped into the agent
// (native/store-map.c): blocks from peers are written to their place in it (the addon's peer
// streams, native/peer-stream.c, with pwrite), a piece is read back from it for its check, and
// peers are served from the mapping. The native FUSE server reads verified pieces from the same
// file itself (localView). A store on a
// network or FUSE file system, where touching the mapping could stall the event loop (and with it
// every read the FUSE server forwards to it), is refused.
import { readSync } from 'node:fs'
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import type { SourceLayout } from '../source-layout.ts'
import { peerShareable, type DescribedEntry, type Description } from '../description.ts'
import { swarmError } from '../errors.ts'
import { checkStoreDir } from '../file-systems.ts'
import { requireNative } from '../native.ts'
import { clipRange, type ByteSource, type LocalView } from '../store.ts'
import { Announcer } from './announce.ts'
import { Assembly, pieceSize } from './assembly.ts'
import { Bitfield } from './bitfield.ts'
import { Connections } from './connections.ts'
import { DescriptionServer, NODE_DESC_PEERS } from './description-exchange.ts'
import type { DhtLookup } from './dht.ts'
import { FanOut } from './fan-out.ts'
import type { JobSecret } from './job-auth.ts'
import { addressToward } from './local-address.ts'
import { dialsHead, HEAD_FALLBACK_MS, NodeListDiscovery, type NodeList } from './node-list.ts'
import { hostPort } from './peer-address.ts'
import { isHeadPeerId, newPeerId } from './peer-id.ts'
import { PiecePicker, Priority } from './picker.ts'
import { unchokeAtOnce } from './unchoke.ts'
import { sourceFilesOf, type SourceFiles } from './source-files.ts'
import { haveMessage, servable, type BlockRequest, type Wire } from './wire.ts'

export interface NodeOptions {
  readonly storeDir: string
  readonly port: number
  readonly maxConns: number
  readonly numwant: number
  /** Reject waiting reads when no byte has arrived for this long. */
  readonly stallTimeoutMs: number
  /** Trackers to announce to, replacing the description's if given. */
  readonly trackers?: readonly string[]
  /** DHT nodes (host:port) to bootstrap from, replacing the description's if given: set, no tracker is asked. */
  readonly dht?: readonly string[]
  /** A DHT node already running toward them (the description's lookup): the node's discovery takes it over. */
  readonly dhtLookup?: DhtLookup
  /**
   * The job's node list and this node's place in it: peers come from there (node-list.ts), no
   * tracker or DHT is asked, the node listens at its own entry, and it dials the seeders at start
   * only if the list picks it to.
   */
  readonly nodeList?: NodeList
  /** With a node list, how long a wait makes no progress before a node that did not dial the seeders does (default 3 s). */
  readonly headFallbackMs?: number
  /** host:port peers to connect to directly (the head's seeder), besides the description's. */
  readonly seeders?: readonly string[]
  /** The job's secret, proven to the tracker and to every peer; undefined: an open swarm. */
  readonly secret?: JobSecret
  /**
   * The directories the set was described from, where this node can read them (a shared file
   * system): when the swarm stalls, the pieces a read waits for are read from there (checked
   * against their hashes) instead of failing the read. Undefined: no fallback.
   */
  readonly fallback?: SourceLayout
  /** The store a node of the same set left in this process (keptStore): its verified pieces are not fetched again. */
  readonly reuseStore?: KeptStore
}

/** A closed node's store, kept for the same set's next node in this process (a lingering agent's: session/warm-agent.ts). */
export interface KeptStore {
  readonly infoHash: string
  readonly path: string
  /** The pieces verified in it (a bitfield). */
  readonly have: Uint8Array
}

export interface NodeStats {
  readonly fromHead: number
  readonly fromPeers: number
  readonly uploaded: number
  /** Bytes read from the source directories because the swarm stalled. */
  readonly fromSource: number
  readonly piecesHave: number
  readonly pieceCount: number
  readonly peers: number
}

const STALL_CHECK_MS = 1000
const READ_AHEAD_PIECES = 1
/** A block not answered in this long is asked of someone else (its peer stopped, or is stuck). */
const REQUEST_TIMEOUT_MS = 10_000
/**
 * A piece goes to at most this many peers within FAN_OUT_WINDOW_MS; others get it from those (see
 * FanOut). One while the job's nodes read the same pages at the same moment (block and file
 * modes): holders then multiply one hop at a time, where with three the node that happened to be
 * first at the head fed 2.5-3.9 copies of all it read over its one uplink, and the launch waited
 * for that uplink (8 nodes, block: 6.4-7.6 s against 10.3-14.6 s; 16 nodes 12.1-14.5 against
 * 20.7-28.7 s; 32 nodes, CPU-bound, alike; bench/README.md, 2026-12-03). Three once every node
 * fetches everything, each in an order of its own (eager): few requests meet, and one turned down
 * costs its node a round trip (with one: 8 nodes 7.4 against 6.8 s, 16 nodes 10.4-11.0 against
 * 9.9-10.0 s).
 */
const READ_FAN_OUT = 1
const FETCH_ALL_FAN_OUT = 3
const FAN_OUT_WINDOW_MS = 500

interface Waiter {
  readonly missing: Set<number>
  /** What waits: a program's read or open, or the background fetch of everything. */
  readonly priority: Priority
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

export class SwarmNode implements ByteSource {
  readonly description: Description
  readonly storePath: string
  private readonly data: FileHandle
  /** The store file's bytes, mapped: the whole set, a piece's bytes good once its `have` bit is set. */
  private readonly bytes: Buffer
  private readonly have: Bitfield
  private readonly assembly: Assembly
  private readonly picker: PiecePicker
  private readonly waiters = new Set<Waiter>()
  private readonly timer: NodeJS.Timeout
  private readonly stallTimeoutMs: number
  private readonly warn: (line: string) => void
  private connections!: Connections
  /** Lists this node where others look for peers, and hands it the peers listed there. */
  private announcer!: Pick<Announcer, 'start' | 'completed' | 'stop'>
  /** Date.now() when the last piece was verified, or a wait began: only good bytes count as progress. */
  private lastProgress = Date.now()
  private fromHead = 0
  private fromPeers = 0
  private fromSource = 0
  /** The source directories' files, for the fallback; undefined: none. */
  private fallback: SourceFiles | undefined
  private fallingBack = false
  private fellBack = false
  private uploaded = 0
  private closing: Promise<void> | undefined
  private fanOut = new FanOut(READ_FAN_OUT, FAN_OUT_WINDOW_MS, FAN_OUT_WINDOW_MS)
  /**
   * Fetching the whole set (eager mode): the head's referrals are plain peer exchange. Such a node
   * asks the head for the pieces no peer has yet, all the time, and dialing each referral grew
   * every node's connections toward a full mesh: 32 nodes took 10.6 s (median of 8 runs) against
   * 10.2, 0.39 CPU-s per agent against 0.34 (bench/README.md, 2026-12-05 00:21; native/agent/peer.c
   * take_pex, the same rule). Where reads fetch, a referral cuts a read's wait on a piece none of
   * the node's peers has (block mode's tails).
   */
  private fetchingAll = false
  /** The seeders a node of a node list did not dial at start: dialed once a wait makes no progress for a while (checkTimeouts). */
  private laterSeeders: { readonly seeders: readonly string[], readonly afterMs: number } | undefined

  /** `warn` hears of peers dropped for bad data or unanswered requests. */
  static async join (desc: Description, opts: NodeOptions, warn: (line: string) => void = () => {}): Promise<SwarmNode> {
    const list = opts.nodeList
    const dht = list ? [] : opts.dht ?? desc.dhtNodes
    const trackers = list || dht.length > 0 ? [] : opts.trackers ?? desc.trackers
    const seeders = [...new Set([...desc.seeders, ...(opts.seeders ?? [])])]
    if (trackers.length === 0 && seeders.length === 0 && dht.length === 0) {
      throw swarmError('the description names no tracker or seeder to get bytes from',
        'pass --tracker URL or --seeder HOST:PORT (printed by `p2prun serve`)')
    }
    const kept = opts.reuseStore?.infoHash === desc.infoHash ? opts.reuseStore : undefined
    // A kept store that is gone (a cleaned /dev/shm) is no error: the node starts a new one.
    const reopened = kept && await open(path.join(kept.path, 'data'), 'r+').catch(() => undefined)
    if (!reopened) checkStoreDir(opts.storeDir, desc.totalBytes)
    // With a node list, where the list says others reach it; otherwise the interface toward the
    // head, where the tracker (or DHT) will see this node's announces come from.
    const own = list && hostPort(list.nodes[list.index] as string)
    const host = own ? own.host : await addressToward(dht[0] ?? trackers[0] ?? seeders[0] as string)
    const storePath = reopened ? (kept as KeptStore).path : await mkdtemp(path.join(opts.storeDir, `p2prun-${desc.infoHash.slice(0, 16)}-`))
      .catch((err: NodeJS.ErrnoException) => {
        throw swarmError(`cannot create a store in ${opts.storeDir}: ${err.code}`, 'pass --store-dir with a writable directory', err)
      })
    const data = reopened ?? await open(path.join(storePath, 'data'), 'wx+', 0o600)
    let bytes: Buffer
    try {
      bytes = mapStore(data.fd, desc.totalBytes, storePath)
    } catch (err) {
      await data.close()
      await rm(storePath, { recursive: true, force: true })
      throw err
    }
    const node = new SwarmNode(desc, data, bytes, storePath, opts.stallTimeoutMs, warn, reopened && kept?.have)
    node.fallback = opts.fallback && sourceFilesOf(desc, opts.fallback)
    const peerId = newPeerId('node')
    const infoHash = Buffer.from(desc.infoHash, 'hex')
    try {
      node.connections = await Connections.listen({
        infoHash, peerId, pieceCount: desc.pieceCount, host, port: own ? own.port : opts.port, maxConns: opts.maxConns, dialTarget: opts.numwant, secret: opts.secret, learnPeers: true, warn,
        dialReferrals: () => !node.fetchingAll,
        handler: node.wireHandler(), onWire: (wire) => node.onWire(wire),
        store: { bytes, fd: data.fd, pieceLength: desc.pieceLength, have: node.have.bytes },
        description: opts.secret && new DescriptionServer(peerShareable(desc), NODE_DESC_PEERS)
      })
    } catch (err) {
      await node.close()
      throw err
    }
    // A node list's peers are its policy's, each dialed; a tracker's or the DHT's, some of them.
    const onPeers = (addresses: string[]) => list ? addresses.forEach((a) => node.connections.dial(a)) : node.connections.dialSome(addresses)
    // The DHT's modules load only where it is used: every agent's start-up pays for what it imports.
    node.announcer = list
      ? new NodeListDiscovery(list, infoHash, onPeers)
      : dht.length > 0
      ? new (await import('./dht.ts')).DhtDiscovery({ bootstrap: dht, infoHash, host, port: node.connections.port, onPeers, onWarning: warn, from: opts.dhtLookup })
      : new Announcer({
        trackers, infoHash, peerId, port: node.connections.port, numwant: opts.numwant, secret: opts.secret,
        progress: () => ({ uploaded: node.uploaded, downloaded: node.fromHead + node.fromPeers, left: node.bytesLeft() }),
        onPeers,
        onWarning: warn
      })
    node.announcer.start()
    if (!list || dialsHead(list.nodes.length, list.index)) node.dialSeeders(seeders)
    else node.laterSeeders = { seeders, afterMs: opts.headFallbackMs ?? HEAD_FALLBACK_MS }
    return node
  }

  private constructor (desc: Description, data: FileHandle, bytes: Buffer, storePath: string, stallTimeoutMs: number, warn: (line: string) => void,
    have?: Uint8Array) {
    this.description = desc
    this.warn = warn
    this.data = data
    this.bytes = bytes
    this.storePath = storePath
    this.stallTimeoutMs = stallTimeoutMs
    this.have = new Bitfield(desc.pieceCount, have)
    // A whole piece is read back from the file for its check, into one buffer kept for it, not
    // through the mapping: the agent then never touches a fresh page of the store itself (the addon
    // writes blocks with pwrite; the FUSE server reads with pread). On the emulated cluster's VM
    // the first touch of each page from user space costs ~6 us; the agent spent 0.06-0.09 CPU-s
    // less at 8 nodes (bench/README.md, 2026-12-03). The mapping holds the same bytes, if the read fails.
    const scratch = Buffer.allocUnsafeSlow(desc.pieceLength)
    const bytesOf = (piece: Buffer, start: number): Buffer => {
      try {
        return scratch.subarray(0, readSync(data.fd, scratch, 0, piece.length, start))
      } catch {
        return piece
      }
    }
    this.assembly = new Assembly(desc, bytes, (start, length) => this.claim(start, length), bytesOf)
    this.picker = new PiecePicker(desc.pieceCount, this.have, this.assembly)
    // Looked at after the loop's next I/O poll, not in the timer phase that precedes it: an agent
    // starved of CPU (many on few cores) wakes to timers first, and blocks already in its socket
    // buffers would count as unanswered, and their peers be dropped for it.
    this.timer = setInterval(() => setImmediate(() => this.checkTimeouts()), STALL_CHECK_MS).unref()
  }

  has (entry: DescribedEntry, offset: number, length: number): boolean {
    const want = clipRange(entry, offset, length)
    if (want === 0 || entry.torrentOffset === undefined) return true
    const [first, last] = this.pieceSpan(entry.torrentOffset + offset, want)
    for (let i = first; i <= last; i++) if (!this.have.get(i)) return false
    return true
  }

  /** Bytes a program waits on, made local at read priority (with one piece of read-ahead); the FUSE server reads them from the store. */
  async ready (entry: DescribedEntry, offset: number, length: number, signal?: AbortSignal): Promise<number> {
    const want = clipRange(entry, offset, length)
    if (want === 0 || entry.torrentOffset === undefined) return 0
    const start = entry.torrentOffset + offset
    this.readAhead(entry, start + want)
    await this.waitForRange(start, want, Priority.Read, signal)
    return want
  }

  /** The bytes themselves, for a reader without the FUSE server (the swarm's tests read through it). */
  async read (entry: DescribedEntry, offset: number, into: Buffer, signal?: AbortSignal): Promise<number> {
    const want = await this.ready(entry, offset, into.length, signal)
    if (want === 0 || entry.torrentOffset === undefined) return 0
    const start = entry.torrentOffset + offset
    return this.bytes.copy(into, 0, start, start + want)
  }

  /** The store and the verified pieces: a piece's bit is set only after its bytes are written. */
  localView (): LocalView {
    return { fd: this.data.fd, chunkLength: this.description.pieceLength, present: this.have.bytes }
  }

  async fetchFile (entry: DescribedEntry, signal?: AbortSignal): Promise<void> {
    if (entry.torrentOffset === undefined) return
    await this.waitForRange(entry.torrentOffset, entry.size, Priority.File, signal)
  }

  fetchEnds (entry: DescribedEntry): void {
    if (entry.torrentOffset === undefined || entry.size === 0) return
    const [first, last] = this.pieceSpan(entry.torrentOffset, entry.size)
    // The picker skips pieces already here.
    this.picker.want(first, first, Priority.File)
    if (last !== first) this.picker.want(last, last, Priority.File)
  }

  /** Fetches the whole set (eager mode: every node of the job does, so the fan-out widens; see READ_FAN_OUT). */
  async fetchAll (signal?: AbortSignal): Promise<void> {
    this.fanOut = new FanOut(FETCH_ALL_FAN_OUT, FAN_OUT_WINDOW_MS, FAN_OUT_WINDOW_MS)
    this.fetchingAll = true
    await this.waitForRange(0, this.description.totalBytes, Priority.Background, signal)
  }

  stats (): NodeStats {
    return {
      fromHead: this.fromHead,
      fromPeers: this.fromPeers,
      uploaded: this.uploaded,
      fromSource: this.fromSource,
      piecesHave: this.have.count,
      pieceCount: this.description.pieceCount,
      peers: this.connections?.wires.size ?? 0
    }
  }

  /** The store and its verified pieces, for the same set's next node (after close with `keepStore`). */
  keptStore (): KeptStore {
    return { infoHash: this.description.infoHash, path: this.storePath, have: Uint8Array.from(this.have.bytes) }
  }

  /** Leaves the swarm; the store is removed unless `keepStore` (for inspection after a run, or for the next node: keptStore). */
  close (options: { keepStore?: boolean } = {}): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.timer)
      this.picker.close()
      this.failAll(swarmError('the swarm node was closed'))
      await Promise.all([this.announcer?.stop(), this.connections?.close(), this.fallback?.close()])
      await this.data.close()
      if (!options.keepStore) await rm(this.storePath, { recursive: true, force: true })
    })()
    return this.closing
  }

  private onWire (wire: Wire): void {
    wire.sendPieces(this.have)
    if (!this.have.complete) wire.interested(true)
    this.picker.addWire(wire)
  }

  private wireHandler () {
    return {
      onPieces: (wire: Wire, index?: number) => this.picker.onPieces(wire, index),
      onChoke: (wire: Wire) => this.picker.onChoke(wire),
      onInterested: unchokeAtOnce,
      onRequest: (wire: Wire, req: BlockRequest) => this.serve(wire, req),
      onBlock: (wire: Wire, req: BlockRequest, data: Buffer) => this.onBlock(wire, req, data),
      onReject: (wire: Wire, req: BlockRequest) => {
        this.assembly.release(req)
        this.picker.onReject(wire, req)
      },
      onClose: (wire: Wire) => {
        for (const req of wire.forget()) this.assembly.release(req)
        this.picker.removeWire(wire)
      }
    }
  }

  /** Answers a peer's request with a view of the store; a piece we lack is turned down. */
  private serve (wire: Wire, req: BlockRequest): void {
    if (!this.have.get(req.index) || !servable(req, pieceSize(this.description, req.index))) return wire.reject(req)
    if (!this.fanOut.admits(wire, req.index)) return wire.reject(req)
    const start = req.index * this.description.pieceLength + req.begin
    this.uploaded += req.length
    wire.piece(req, this.bytes.subarray(start, start + req.length))
  }

  private onBlock (wire: Wire, req: BlockRequest, data: Buffer): void {
    if (isHeadPeerId(wire.peerId)) this.fromHead += data.length
    else this.fromPeers += data.length
    const got = this.assembly.receive(req, data, wire.peerId)
    // The wire has room again; nothing else changed for the others.
    if (got.state === 'partial') return this.picker.schedule(wire)
    if (got.state === 'failed') {
      // Its blocks are free again and asked anew; the peers that sent them are no longer asked.
      for (const peerId of got.from) this.dropPeer(peerId, `sent piece ${req.index}, which failed its hash check`, true)
      return this.picker.schedule()
    }
    this.accept(req.index, got.from)
    this.picker.schedule(wire)
  }

  /** A verified piece, in its place in the store (from peers, `from`, or the source): announced and handed to waiting reads. */
  private accept (index: number, from: readonly string[] = []): void {
    this.lastProgress = Date.now()
    if (this.closing || this.have.get(index)) return
    this.have.set(index)
    this.picker.verified(index)
    // A peer that holds the piece has no use for the news, but the head: it holds a piece it sent
    // for this node alone until told it is in (fan-out.ts), then 10 s, which a node not connected
    // to this one waited.
    const have = haveMessage(index)
    const toHead = from.some(isHeadPeerId)
    for (const w of this.connections.wires.values()) if (!w.peerPieces.get(index) || (toHead && isHeadPeerId(w.peerId))) w.have(have)
    if (this.have.complete) this.onComplete()
    this.onVerified(index)
  }

  /** Room in the store for bytes about to be written there; out of room fails what waits, as a failed write did. */
  private claim (start: number, length: number): boolean {
    try {
      requireNative('the node\'s store', swarmError).allocateStore(this.data.fd, start, length)
      return true
    } catch (err) {
      this.failAll(swarmError(`cannot write to the store ${this.storePath}: ${(err as Error).message}`,
        'check that --store-dir has room for the whole set', err))
      return false
    }
  }

  private onComplete (): void {
    this.announcer.completed()
    for (const w of this.connections.wires.values()) w.interested(false)
  }

  private bytesLeft (): number {
    let left = 0
    for (let i = 0; i < this.description.pieceCount; i++) if (!this.have.get(i)) left += pieceSize(this.description, i)
    return left
  }

  private waitForRange (start: number, length: number, priority: Priority, signal?: AbortSignal): Promise<void> {
    if (this.closing) return Promise.reject(swarmError('the swarm node is closed'))
    const [first, last] = this.pieceSpan(start, length)
    const missing = new Set<number>()
    for (let i = first; i <= last; i++) if (!this.have.get(i)) missing.add(i)
    if (missing.size === 0) return Promise.resolve()
    signal?.throwIfAborted()
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => { this.waiters.delete(waiter); reject(signal?.reason) }
      const waiter: Waiter = {
        missing,
        priority,
        resolve: () => { signal?.removeEventListener('abort', onAbort); resolve() },
        reject: (err) => { signal?.removeEventListener('abort', onAbort); reject(err) }
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      // The stall clock runs only while someone waits: an idle node is not stalled.
      if (this.waiters.size === 0) this.lastProgress = Date.now()
      this.waiters.add(waiter)
      this.picker.want(first, last, priority)
    })
  }

  /** Queue the piece after a read (within the file) behind the reads: programs read forward. */
  private readAhead (entry: DescribedEntry, from: number): void {
    const fileEnd = (entry.torrentOffset ?? 0) + entry.size
    if (from >= fileEnd) return
    const [first, last] = this.pieceSpan(from, Math.min(fileEnd - from, READ_AHEAD_PIECES * this.description.pieceLength))
    for (let i = first; i <= last; i++) {
      if (!this.have.get(i)) { this.picker.want(i, last, Priority.File); return }
    }
  }

  private pieceSpan (start: number, length: number): [number, number] {
    const pieceLength = this.description.pieceLength
    return [Math.floor(start / pieceLength), Math.floor((start + length - 1) / pieceLength)]
  }

  private onVerified (index: number): void {
    for (const waiter of this.waiters) {
      waiter.missing.delete(index)
      if (waiter.missing.size === 0) {
        this.waiters.delete(waiter)
        waiter.resolve()
      }
    }
  }

  private checkTimeouts (): void {
    if (this.closing) return // closed between the timer and this look
    const expired = performance.now() - REQUEST_TIMEOUT_MS
    for (const wire of [...this.connections?.wires.values() ?? []]) {
      if ((wire.owesSince() ?? Infinity) >= expired) continue
      // Closing the connection frees its requests for other peers. The head may only be busy:
      // it is dialed again; another node is not asked again for a while.
      this.dropPeer(wire.peerId, `answered no request for ${REQUEST_TIMEOUT_MS / 1000} s`, !isHeadPeerId(wire.peerId))
    }
    if (this.waiters.size > 0) this.picker.schedule() // the endgame looks for stalled reads
    if (this.laterSeeders && this.waiters.size > 0 && Date.now() - this.lastProgress >= this.laterSeeders.afterMs) {
      this.dialSeeders(this.laterSeeders.seeders)
      this.laterSeeders = undefined
    }
    if (this.waiters.size === 0 || Date.now() - this.lastProgress < this.stallTimeoutMs || this.fallingBack) return
    const programs = [...this.waiters].filter((w) => w.priority !== Priority.Background)
    if (this.fallback && programs.length > 0) {
      void this.fallBack(programs)
      return
    }
    this.failAll(this.stalled())
  }

  /** The seeders are dialed until the end: the head holds every piece. */
  private dialSeeders (seeders: readonly string[]): void {
    for (const s of seeders) this.connections.dial(s, true)
  }

  private stalled (also = ''): Error {
    const peers = this.connections.wires.size
    return swarmError(`no data arrived for ${Math.round(this.stallTimeoutMs / 1000)} s ` +
      `(${peers} peer${peers === 1 ? '' : 's'} connected): the seeder is unreachable or the swarm is stuck${also}`,
    'check that `p2prun serve` is running on the head node and that its ports are reachable from this node')
  }

  /**
   * The swarm stalled while programs wait (reads, opens): their pieces come from the source
   * directories instead (CVMFS-style failover to the shared file system the set was described
   * from), each checked against its hash like any piece. Said once; if the source fails too, the
   * reads fail as before. The background fetch of everything is not read from there: N nodes doing
   * that at once is the storm p2prun exists to avoid.
   */
  private async fallBack (programs: readonly Waiter[]): Promise<void> {
    const fallback = this.fallback as SourceFiles
    this.fallingBack = true
    const wanted = new Set<number>()
    for (const waiter of programs) for (const index of waiter.missing) wanted.add(index)
    try {
      for (const index of wanted) {
        const data = await fallback.readPiece(index)
        if (!fallback.matches(index, data)) throw new Error(`piece ${index} differs from the description there`)
        if (this.closing) return
        if (this.have.get(index)) continue // a peer's copy came first
        const start = index * this.description.pieceLength
        if (!this.claim(start, data.length)) return
        this.fromSource += data.length
        this.assembly.settle(index)
        data.copy(this.bytes, start)
        this.accept(index)
        this.picker.schedule() // the piece's blocks asked of peers are settled
      }
      if (!this.fellBack) {
        this.fellBack = true
        this.warn(`the swarm stalled for ${Math.round(this.stallTimeoutMs / 1000)} s: reading what programs wait for from the source directory instead`)
      }
    } catch (err) {
      this.failAll(this.stalled(`, and the source directory cannot stand in: ${(err as Error).message}`))
    } finally {
      this.fallingBack = false
    }
  }

  private dropPeer (peerId: string, why: string, ban: boolean): void {
    const wire = this.connections.wires.get(peerId)
    const who = wire ? `${wire.remoteAddress ?? '?'}:${wire.remotePort ?? '?'}` : Buffer.from(peerId, 'hex').toString('latin1').slice(0, 8)
    this.warn(`dropped peer ${who}${ban ? ' for a while' : ''}: it ${why}`)
    if (ban) this.connections.ban(peerId, why)
    else this.connections.drop(peerId, why)
  }

  private failAll (err: Error): void {
    const waiters = [...this.waiters]
    this.waiters.clear()
    for (const w of waiters) w.reject(err)
  }
}

/** The store file, mapped (its room is allocated piece by piece: SwarmNode.claim). */
function mapStore (fd: number, setBytes: number, storePath: string): Buffer {
  const addon = requireNative('the node\'s store', swarmError)
  try {
    return addon.mapStore(fd, setBytes)
  } catch (err) {
    throw swarmError(`cannot make the store ${storePath}: ${(err as Error).message}`,
      'pass --store-dir with a writable directory on node-local memory or disk', err)
  }
}

/** The store holds the whole set (eager mode fetches it all): on node-local storage, with room for it. */
