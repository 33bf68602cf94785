// How many peers a piece goes to at once. The head sends each piece to one node at a time and
// turns the others down (BEP 6 reject: they get it from that node); a node sends a piece to one
// peer at a time while the job's nodes read, a few once they fetch everything (lib/swarm/node.ts,
// READ_FAN_OUT). In a crowd that wants the same piece at the same moment (block mode: every node
// faults on the same page), holders then multiply like a tree, instead of the first holder's one
// uplink feeding everyone while the others wait (measured in bench/README.md, 2026-12-02).
// A peer turned down backs off that holder for the piece (the picker) and asks another.
// A piece counts as on its way to a peer for at least `minMs`, and after that until the peer says it
// has it (at most `maxMs`): a recipient slow to say so (its core starved, its link full) keeps its
// place, and the head does not hand out another copy because a fixed time has passed.

/** What the rule needs of a connection. */
export interface FanOutPeer {
  /** Only a peer that speaks BEP 6 can be turned down; any other is always answered. */
  readonly fast: boolean
  readonly destroyed: boolean
  /** What the peer said it has: a piece it has is no longer on its way to it. */
  readonly peerPieces: { get (index: number): boolean }
}

export class FanOut<P extends FanOutPeer = FanOutPeer> {
  private readonly limit: number
  private readonly minMs: number
  private readonly maxMs: number
  private readonly clock: () => number
  /** Per piece, the peers it is on its way to, and since when. */
  private readonly sentTo = new Map<number, Array<{ readonly peer: P, readonly at: number }>>()

  /**
   * At most `limit` peers per piece at once, each for `minMs` to `maxMs` (`minMs` 0: no limit);
   * `clock` is performance.now unless a test steps it.
   */
  constructor (limit: number, minMs: number, maxMs: number, clock: () => number = () => performance.now()) {
    this.limit = limit
    this.minMs = minMs
    this.maxMs = Math.max(minMs, maxMs)
    this.clock = clock
  }

  /** Whether piece `index` may go to `peer` now; if so, it counts as one of the piece's peers. */
  admits (peer: P, index: number): boolean {
    if (this.minMs <= 0 || !peer.fast) return true
    const now = this.clock()
    const onTheirWay = (this.sentTo.get(index) ?? []).filter((s) => !s.peer.destroyed &&
      (now - s.at < this.minMs || (now - s.at < this.maxMs && !s.peer.peerPieces.get(index))))
    this.sentTo.set(index, onTheirWay)
    if (onTheirWay.some((s) => s.peer === peer)) return true
    if (onTheirWay.length >= this.limit) return false
    onTheirWay.push({ peer, at: now })
    return true
  }

  /** The peers piece `index` was last admitted to (after `admits` turned one down: those it went to instead). */
  recipients (index: number): P[] {
    return (this.sentTo.get(index) ?? []).map((s) => s.peer)
  }
}
