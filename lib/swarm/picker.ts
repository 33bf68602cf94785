// Which block a node asks which peer for, and when. Three ordered want-lists (a read the program
// waits on, a file being opened, the background), a shallow pipeline per peer with room reserved
// for reads, a node-specific random order for the background so nodes that start together fetch
// different pieces and trade them, and a head that is asked only for pieces no unchoked peer
// holds, so its uplink carries each piece about once.
//  - Reads first: a program blocked on a page fault waits behind every background block queued
//    at the peer (measured: eager 7.4 s against block 4.8 s for 2 nodes), so the background runs
//    between reads.
//  - Shallow pipelines: keeping 0.5-1 s of requests in flight per peer (sized for internet round
//    trips) queues a program's read behind a second of background blocks.
//  - Holders taken in a random order: a read needs one piece at a time, so the first peer looked at
//    that holds it is asked, and in connection order that is always one of the nodes that started
//    first. In block mode at 32 nodes one of those uploaded 228-337 MB (its 100 Mbit/s uplink set
//    the makespan) while 8-23 nodes uploaded almost nothing (bench/README.md, 2026-12-03).
import { isHeadPeerId, isP2prunPeerId } from './peer-id.ts'
import type { Assembly } from './assembly.ts'
import type { Bitfield } from './bitfield.ts'
import { BLOCK_LENGTH, type BlockRequest, type Wire } from './wire.ts'

export const Priority = { Background: 0, File: 1, Read: 2 } as const
export type Priority = typeof Priority[keyof typeof Priority]

/** Bytes in flight per peer for file and background pieces: enough on a LAN. */
const PIPELINE_BYTES = 96 * 1024
/** Bytes a peer may take beyond PIPELINE_BYTES for reads a program is blocked on. */
const READ_EXTRA_BYTES = 128 * 1024
/**
 * Request size for p2prun's own peers: a 64 KiB request costs about what a 16 KiB one does to
 * send, serve and assemble (4 nodes fetching over loopback: 10% less CPU per node, 20% less at
 * the head). Other clients get BEP 3's 16 KiB.
 */
const P2PRUN_REQUEST_LENGTH = 64 * 1024
/**
 * After a peer turned a piece down (the head, or a node, is sending it to others: see the seeder's
 * deferToPeersMs and the node's fan-out), ask that peer for it again only after this long; other
 * holders may be asked at once.
 */
const BACKOFF_MS = 250
/**
 * A block a program waits on (a read) that one peer has not sent in this long is also asked of
 * another peer that holds it: the request timeout (10 s) is for dropping a peer, not for making a
 * page fault wait. The node re-runs the picker every second for this. The head takes such a second
 * request only when no other peer holds the piece, the rule `fill` keeps for it: with the head as
 * everyone's second source, block mode at 32 nodes had the head send 1.3–1.9x the set instead of 1x.
 */
const ENDGAME_AFTER_MS = 1000

interface Peer {
  readonly head: boolean
  readonly requestLength: number
  /** Whether its pieces are in peerHave: while it lets us download (unchoked). */
  counted: boolean
  /** The bitfield counted in peerHave (a bitfield message replaces the wire's). */
  pieces: Bitfield
  /** The clock's time until which it is not asked for a piece it turned down, by piece. */
  readonly backoff: Map<number, number>
  /**
   * Set when a pass over it, with room left, found nothing more to ask at any priority: the pieces
   * it announced since, the only ones that can be new to ask of it, until something changes for
   * every peer (new wants, blocks freed, the timers), which passes over all it holds again.
   */
  announcedSince: number[] | undefined
}

export class PiecePicker {
  private readonly pieceCount: number
  private readonly have: Bitfield
  private readonly assembly: Assembly
  /** Per priority, wanted pieces in the order to fetch them (a Set keeps insertion order). */
  private readonly wants: Array<Set<number>> = [new Set(), new Set(), new Set()]
  /** How many unchoked non-head peers hold each piece: the head is asked only for the others. */
  private readonly peerHave: Uint16Array
  private readonly clock: () => number
  private readonly random: () => number
  private readonly peers = new Map<Wire, Peer>()
  private scheduled = false
  /** Wires whose own state changed since the last turn; every wire, if `allChanged`. */
  private readonly changed = new Set<Wire>()
  private allChanged = false
  private closed = false
  private backoffTimer: NodeJS.Timeout | undefined

  /**
   * `clock` is performance.now unless a test steps time itself (backoffs, the endgame); `random`
   * is Math.random unless a test chooses the orders.
   */
  constructor (pieceCount: number, have: Bitfield, assembly: Assembly, clock: () => number = () => performance.now(),
    random: () => number = Math.random) {
    this.pieceCount = pieceCount
    this.have = have
    this.assembly = assembly
    this.clock = clock
    this.random = random
    this.peerHave = new Uint16Array(pieceCount)
  }

  /**
   * Wants pieces first..last at a priority, behind what is already wanted: in order for reads and
   * files (programs read forward), in an order of this node's own for the background.
   */
  want (first: number, last: number, priority: Priority): void {
    const set = this.wants[priority] as Set<number>
    const add = (i: number) => { if (!this.have.get(i)) set.add(i) }
    if (priority !== Priority.Background) {
      for (let i = first; i <= last; i++) add(i)
    } else {
      shuffle(Array.from({ length: last - first + 1 }, (_, i) => first + i), this.random).forEach(add)
    }
    this.schedule()
  }

  verified (index: number): void {
    for (const w of this.wants) w.delete(index)
  }

  addWire (wire: Wire): void {
    this.peers.set(wire, {
      head: isHeadPeerId(wire.peerId),
      requestLength: isP2prunPeerId(wire.peerId) ? P2PRUN_REQUEST_LENGTH : BLOCK_LENGTH,
      counted: false,
      pieces: wire.peerPieces,
      backoff: new Map(),
      announcedSince: undefined
    })
  }

  removeWire (wire: Wire): void {
    const peer = this.peers.get(wire)
    if (!peer) return
    this.count(peer, false)
    this.peers.delete(wire)
    this.schedule()
  }

  /**
   * The wire's pieces changed: one more (`index`), or a new bitfield. One more piece can only give
   * this wire something to ask for (and the head less: peerHave only grows), so only it is looked at.
   */
  onPieces (wire: Wire, index?: number): void {
    const peer = this.peers.get(wire)
    if (!peer) return
    if (index !== undefined) {
      if (peer.counted && !peer.head) this.peerHave[index] = (this.peerHave[index] ?? 0) + 1
      peer.announcedSince?.push(index)
      return this.schedule(wire)
    }
    const counted = peer.counted
    this.count(peer, false)
    peer.pieces = wire.peerPieces
    this.count(peer, counted)
    this.schedule()
  }

  onChoke (wire: Wire): void {
    const peer = this.peers.get(wire)
    if (peer) this.count(peer, !wire.peerChoking)
    this.schedule()
  }

  onReject (wire: Wire, req: BlockRequest): void {
    const peer = this.peers.get(wire)
    if (peer) {
      peer.backoff.set(req.index, this.clock() + BACKOFF_MS)
      this.wakeAfterBackoff()
    }
    this.schedule()
  }

  /**
   * Runs the picker once per event-loop turn, however many messages arrived in it: over `wire`
   * alone when only its own state changed (a block or a have from it), else over every wire (the
   * wants, the blocks free to ask, or what the head may be asked changed). Most turns are the
   * former: in block mode at 32 nodes, 3,000 turns per node passed over 31 peers each, with
   * nothing new to ask of most of them.
   */
  schedule (wire?: Wire): void {
    if (wire) this.changed.add(wire)
    else this.allChanged = true
    if (this.scheduled || this.closed) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      if (this.closed) return
      const all = this.allChanged
      // Every wire in a random order: which holder of a piece is looked at first (see the top).
      const wires = all ? shuffle([...this.peers.keys()], this.random) : [...this.changed]
      this.allChanged = false
      this.changed.clear()
      // One clock read per turn, not one per peer and want-list: a turn's passes take microseconds.
      const now = this.clock()
      for (const w of wires) {
        const peer = this.peers.get(w)
        if (peer) this.update(w, peer, now, all)
      }
    })
  }

  close (): void {
    this.closed = true
    clearTimeout(this.backoffTimer)
  }

  /**
   * Asks the wire for what it holds, reads first, until its pipeline is full; a pass over a wire
   * that had nothing more to give, on a change of its own, looks only at the pieces it announced
   * since (`announcedSince`). In eager mode at 32 nodes a node hears ~23,000 haves, and each
   * passed over the hundreds of pieces still wanted, nearly all already asked of others or not held.
   */
  private update (wire: Wire, peer: Peer, now: number, all: boolean): void {
    const only = all ? undefined : peer.announcedSince
    peer.announcedSince = undefined
    if (wire.destroyed || wire.peerChoking) return
    const [background, file, read] = this.wants as [Set<number>, Set<number>, Set<number>]
    const among = (wanted: Set<number>): Iterable<number> => only ? only.filter((i) => wanted.has(i)) : wanted
    if (!this.fill(wire, peer, among(read), PIPELINE_BYTES + READ_EXTRA_BYTES, now)) return
    this.endgame(wire, peer, read, now)
    if (!this.fill(wire, peer, among(file), PIPELINE_BYTES, now)) return
    // With reads waiting, the background is not looked at: the pass did not see all there is.
    if (read.size === 0 && this.fill(wire, peer, among(background), PIPELINE_BYTES, now)) peer.announcedSince = []
  }

  /** Asks this wire for stalled blocks of read pieces that another peer was asked for (see ENDGAME_AFTER_MS). */
  private endgame (wire: Wire, peer: Peer, read: Set<number>, now: number): void {
    const askedBefore = now - ENDGAME_AFTER_MS
    for (const piece of read) {
      if (wire.outstandingBytes >= PIPELINE_BYTES + READ_EXTRA_BYTES) return
      if (!wire.peerPieces.get(piece) || wire.outstanding.some((r) => r.index === piece) || backingOff(peer, piece, now)) continue
      // One holder is the stalled peer (or none, if the head was asked first); another peer can stand in.
      if (peer.head && (this.peerHave[piece] ?? 0) > 1) continue
      const req = this.assembly.reserveStalled(piece, peer.requestLength, askedBefore)
      if (req) wire.request(req)
    }
  }

  /** Requests blocks of wanted pieces the wire has until `depth` bytes are in flight; false once it is full. */
  private fill (wire: Wire, peer: Peer, wanted: Iterable<number>, depth: number, now: number): boolean {
    if (wire.outstandingBytes >= depth) return false
    for (const piece of wanted) {
      if (!wire.peerPieces.get(piece) || backingOff(peer, piece, now)) continue
      if (peer.head && this.peerHave[piece] !== 0) continue
      while (wire.outstandingBytes < depth) {
        const req = this.assembly.reserve(piece, peer.requestLength, now)
        if (!req) break
        wire.request(req)
      }
      if (wire.outstandingBytes >= depth) return false
    }
    return true
  }

  /** Adds or removes a peer's pieces from peerHave. */
  private count (peer: Peer, on: boolean): void {
    if (peer.head || peer.counted === on) return
    peer.counted = on
    for (let i = 0; i < this.pieceCount; i++) {
      if (peer.pieces.get(i)) this.peerHave[i] = (this.peerHave[i] ?? 0) + (on ? 1 : -1)
    }
  }

  /**
   * Nothing else may wake the picker when a backoff ends (no peer ever announced the piece): one
   * timer, re-armed until the latest backoff has passed.
   */
  private wakeAfterBackoff (): void {
    if (this.backoffTimer || this.closed) return
    const now = this.clock()
    let latest = 0
    for (const peer of this.peers.values()) {
      for (const [piece, end] of peer.backoff) {
        if (end <= now) peer.backoff.delete(piece)
        else if (end > latest) latest = end
      }
    }
    const wait = latest - now
    if (wait <= 0) return
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined
      this.schedule()
      this.wakeAfterBackoff()
    }, wait).unref()
  }
}

function backingOff (peer: Peer, piece: number, now: number): boolean {
  return (peer.backoff.get(piece) ?? 0) > now
}

/** The array, shuffled in place (Fisher-Yates). */
function shuffle<T> (items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[items[i], items[j]] = [items[j] as T, items[i] as T]
  }
  return items
}
