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
// that start together fetch different pieces and trade them, and a head that is asked first for
// pieces no other peer can give.
import type { Torrent, Wire } from 'webtorrent'
import { isHeadWire } from './tuning.ts'

export const Priority = { Background: 0, File: 1, Read: 2 } as const
export type Priority = typeof Priority[keyof typeof Priority]

/** Blocks (16 KiB) in flight per peer for file and background pieces: enough on a LAN. */
const PIPELINE = 6
/** Blocks a peer may take beyond PIPELINE for reads a program is blocked on. */
const READ_EXTRA = 8

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
  /** How many connected non-head peers have each piece: the head is asked for the others first. */
  private readonly peerHave: Uint16Array
  private scheduled = false

  constructor (torrent: Torrent, pieceCount: number) {
    this.torrent = torrent as unknown as TorrentInternals
    this.pieceCount = pieceCount
    this.peerHave = new Uint16Array(pieceCount)
    this.torrent._updateWire = (wire) => this.updateWire(wire as unknown as WireInternals, isHeadWire(wire))
    // webtorrent runs a full update on every block, `have` and bitfield; one per event-loop turn
    // does the same work once for a whole batch of messages.
    this.torrent._update = () => this.schedule()
    torrent.on('wire', (wire: Wire) => this.track(wire))
    torrent.on('verified', (index: number) => { for (const w of this.wants) w.delete(index) })
  }

  /** Wants pieces first..last at a priority (kept in that order behind what is already wanted). */
  want (first: number, last: number, priority: Priority): void {
    const set = this.wants[priority] as Set<number>
    for (let i = first; i <= last; i++) if (!this.torrent.bitfield.get(i)) set.add(i)
    this.schedule()
  }

  /** Wants every missing piece in the background, in an order of this node's own. */
  wantAll (): void {
    const order = Array.from({ length: this.pieceCount }, (_, i) => i)
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1))
      ;[order[i], order[j]] = [order[j] as number, order[i] as number]
    }
    const set = this.wants[Priority.Background] as Set<number>
    for (const i of order) if (!this.torrent.bitfield.get(i)) set.add(i)
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
    if (!this.fill(wire, read, PIPELINE + READ_EXTRA, false)) return
    if (!this.fill(wire, file, PIPELINE, false)) return
    // The head is the swarm's scarcest uplink: it gets the background pieces no peer has first.
    if (head && !this.fill(wire, background, PIPELINE, true)) return
    this.fill(wire, background, PIPELINE, false)
  }

  /** Requests blocks of wanted pieces the wire has until it holds `depth`; false once it is full. */
  private fill (wire: WireInternals, wanted: Set<number>, depth: number, onlyUnheld: boolean): boolean {
    if (wire.requests.length >= depth) return false
    for (const piece of wanted) {
      if (!wire.peerPieces.get(piece) || (onlyUnheld && this.peerHave[piece] !== 0)) continue
      while (wire.requests.length < depth && this.torrent._request(wire as unknown as Wire, piece, false)) {
        // each call reserves and requests one more block of the piece
      }
      if (wire.requests.length >= depth) return false
    }
    return true
  }

  private track (wire: Wire): void {
    if (isHeadWire(wire)) return
    const pieces = (wire as unknown as WireInternals).peerPieces
    const held = new Set<number>()
    const count = (i: number) => { if (!held.has(i)) { held.add(i); this.peerHave[i] = (this.peerHave[i] ?? 0) + 1 } }
    wire.on('have', count)
    wire.on('bitfield', () => { for (let i = 0; i < this.pieceCount; i++) if (pieces.get(i)) count(i) })
    wire.once('close', () => { for (const i of held) this.peerHave[i] = (this.peerHave[i] ?? 1) - 1 })
  }
}
