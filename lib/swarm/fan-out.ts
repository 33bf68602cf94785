// How many peers a piece goes to at once. The head sends each piece to one node at a time and
// turns the others down (BEP 6 reject: they get it from that node); a node sends a piece to a few
// peers at a time. In a crowd that wants the same piece at the same moment (block mode: every node
// faults on the same page), holders then multiply like a tree, instead of the first holder's one
// uplink feeding everyone while the others wait (measured in bench/README.md, 2026-12-02).
// A peer turned down backs off that holder for the piece (the picker) and asks another.

/** What the rule needs of a connection. */
export interface FanOutPeer {
  /** Only a peer that speaks BEP 6 can be turned down; any other is always answered. */
  readonly fast: boolean
  readonly destroyed: boolean
}

export class FanOut {
  private readonly limit: number
  private readonly windowMs: number
  private readonly clock: () => number
  /** Per piece, the peers it went to within the window, and since when. */
  private readonly sentTo = new Map<number, Array<{ readonly peer: FanOutPeer, readonly at: number }>>()

  /** At most `limit` peers per piece within `windowMs` (0: no limit); `clock` is performance.now unless a test steps it. */
  constructor (limit: number, windowMs: number, clock: () => number = () => performance.now()) {
    this.limit = limit
    this.windowMs = windowMs
    this.clock = clock
  }

  /** Whether piece `index` may go to `peer` now; if so, it counts as one of the piece's peers. */
  admits (peer: FanOutPeer, index: number): boolean {
    if (this.windowMs <= 0 || !peer.fast) return true
    const now = this.clock()
    const recent = (this.sentTo.get(index) ?? []).filter((s) => now - s.at < this.windowMs && !s.peer.destroyed)
    this.sentTo.set(index, recent)
    if (recent.some((s) => s.peer === peer)) return true
    if (recent.length >= this.limit) return false
    recent.push({ peer, at: now })
    return true
  }
}
