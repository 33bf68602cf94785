// Which piece a node asks which peer for, and when. webtorrent's own picker does not fit a job's
// swarm, measured on one node fetching the 48 MB Pynamic set over loopback (7.1 s, 7.7 s of CPU):
//  - its rarest-first scans every piece once per candidate, per wire, per received block:
//    75% of the node's CPU went to piece selection;
//  - overlapping or adjacent selections merge and take the higher priority, so a program's
//    page-fault read and the background fetch of everything end up one undifferentiated range;
//  - it keeps 0.5-1 s of requests in flight per peer (sized for internet round trips), so a
//    program's read queues behind a second of background blocks.
// This picker replaces the torrent's per-wire request step. It keeps three ordered want-lists
// (a read the program waits on, a file being opened, the background), a shallow pipeline per
// peer with room reserved for reads, a node-specific random order for the background so nodes
// that start together fetch different pieces and trade them, and a head that is asked only for
// pieces no unchoked peer holds, so its uplink carries each piece about once.
import type { Torrent, Wire } from 'webtorrent'
import { isHeadWire } from './tuning.ts'

export const Priority = { Background: 0, File: 1, Read: 2 } as const
export type Priority = typeof Priority[keyof typeof Priority]

/** Blocks (16 KiB) in flight per peer for file and background pieces: enough on a LAN. */
const PIPELINE = 6
/** Blocks a peer may take beyond PIPELINE for reads a program is blocked on. */
const READ_EXTRA = 8
/**
 * After the head turned a piece down (it is sending it to another node: see the seeder's
 * deferToPeers), ask peers for it and the head again only after this long.
 */
const HEAD_BACKOFF_MS = 250

/** The parts of webtorrent's Torrent and Wire the picker drives (not in its public types). */
interface TorrentInternals {
  _update: () => void
  _updateWire: (wire: Wire) => void
  _updateWireWrapper: () => void
  _request: (wire: Wire, index: number, hotswap: boolean) => boolean
  wires: Wire[]
  bitfield: { get: (i: number) => boolean }
  destroyed: boolean
}
interface WireInternals {
  requests: unknown[]
  peerChoking: boolean
  destroyed: boolean
  peerPieces: { get: (i: number) => boolean }
}

export class PiecePicker {
  private readonly torrent: TorrentInternals
  private readonly pieceCount: number
  /** Per priority, wanted pieces in the order to fetch them (a Set keeps insertion order). */
  private readonly wants: Array<Set<number>> = [new Set(), new Set(), new Set()]
  /** How many unchoked non-head peers hold each piece: the head is asked only for the others. */
  private readonly peerHave: Uint16Array
  /** performance.now() until which the head is not asked for a piece it turned down. */
  private readonly headBackoff: Float64Array
  private scheduled = false
  private backoffTimer: NodeJS.Timeout | undefined

  constructor (torrent: Torrent, pieceCount: number) {
    this.torrent = torrent as unknown as TorrentInternals
    this.pieceCount = pieceCount
    this.peerHave = new Uint16Array(pieceCount)
    this.headBackoff = new Float64Array(pieceCount)
    this.torrent._updateWire = (wire) => this.updateWire(wire as unknown as WireInternals, isHeadWire(wire))
    // webtorrent runs a full update on every block, `have` and bitfield; one per event-loop turn
    // does the same work once for a whole batch of messages.
    this.torrent._update = () => this.schedule()
    torrent.on('wire', (wire: Wire) => this.track(wire))
    torrent.on('verified', (index: number) => { for (const w of this.wants) w.delete(index) })
  }

  /**
   * Wants pieces first..last at a priority, behind what is already wanted: in order for reads and
   * files (programs read forward), in an order of this node's own for the background, so nodes
   * that start together fetch different pieces and trade them.
   */
  want (first: number, last: number, priority: Priority): void {
    const set = this.wants[priority] as Set<number>
    const add = (i: number) => { if (!this.torrent.bitfield.get(i)) set.add(i) }
    if (priority !== Priority.Background) {
      for (let i = first; i <= last; i++) add(i)
    } else {
      const order = Array.from({ length: last - first + 1 }, (_, i) => first + i)
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1))
        ;[order[i], order[j]] = [order[j] as number, order[i] as number]
      }
      order.forEach(add)
    }
    this.schedule()
  }

  private schedule (): void {
    if (this.scheduled || this.torrent.destroyed) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      if (!this.torrent.destroyed) this.torrent._updateWireWrapper()
    })
  }

  private updateWire (wire: WireInternals, head: boolean): void {
    if (wire.destroyed || wire.peerChoking) return
    const [background, file, read] = this.wants as [Set<number>, Set<number>, Set<number>]
    // The head is the swarm's scarcest uplink: it is asked only for pieces no unchoked peer holds.
    if (!this.fill(wire, read, PIPELINE + READ_EXTRA, head)) return
    if (!this.fill(wire, file, PIPELINE, head)) return
    // A program blocked on a page fault waits behind every background block queued at the peer
    // (measured: eager 7.4 s against block 4.8 s for 2 nodes): the background runs between reads.
    if (read.size === 0) this.fill(wire, background, PIPELINE, head)
  }

  /** Requests blocks of wanted pieces the wire has until it holds `depth`; false once it is full. */
  private fill (wire: WireInternals, wanted: Set<number>, depth: number, head: boolean): boolean {
    if (wire.requests.length >= depth) return false
    const now = performance.now()
    for (const piece of wanted) {
      if (!wire.peerPieces.get(piece)) continue
      if (head && (this.peerHave[piece] !== 0 || (this.headBackoff[piece] ?? 0) > now)) continue
      while (wire.requests.length < depth && this.torrent._request(wire as unknown as Wire, piece, false)) {
        // each call reserves and requests one more block of the piece
      }
      if (wire.requests.length >= depth) return false
    }
    return true
  }

  /**
   * Nothing else may wake the picker when a backoff ends (no peer ever announced the piece): one
   * timer, re-armed until the latest backoff has passed.
   */
  private wakeAfterBackoff (): void {
    if (this.backoffTimer) return
    let latest = 0
    for (const end of this.headBackoff) if (end > latest) latest = end
    const wait = latest - performance.now()
    if (wait <= 0) return
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined
      this.schedule()
      this.wakeAfterBackoff()
    }, wait).unref()
  }

  /** Counts the pieces a peer holds while it lets us download (unchoked): those it can serve now. */
  private track (wire: Wire): void {
    if (isHeadWire(wire)) {
      wire.on('reject', (index: number) => {
        this.headBackoff[index] = performance.now() + HEAD_BACKOFF_MS
        this.wakeAfterBackoff()
      })
      return
    }
    const w = wire as unknown as WireInternals
    const held = new Set<number>()
    let counted = !w.peerChoking
    const add = (i: number, by: number) => { this.peerHave[i] = (this.peerHave[i] ?? 0) + by }
    const have = (i: number) => {
      if (held.has(i)) return
      held.add(i)
      if (counted) add(i, 1)
    }
    const count = (on: boolean) => {
      if (counted === on) return
      counted = on
      for (const i of held) add(i, on ? 1 : -1)
      this.schedule()
    }
    wire.on('have', have)
    wire.on('bitfield', () => { for (let i = 0; i < this.pieceCount; i++) if (w.peerPieces.get(i)) have(i) })
    wire.on('unchoke', () => count(true))
    wire.on('choke', () => count(false))
    wire.once('close', () => count(false))
  }
}
