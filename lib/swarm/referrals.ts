// The head turns a piece down while it is on its way to another node and names that node (a
// referral: seeder.ts refer). A node waiting on a piece none of its peers has needs it: otherwise
// it waits the head's deferral. But in eager mode every node asks the head for pieces no peer has
// yet, all the time, and dialing each referral grew every node's connections back toward a full
// mesh: 32 nodes took 10.6-11.6 s against 9.2-9.9 (bench/README.md, 2026-12-04 22:59). So a
// referral's nodes are all dialed when a program waits on its piece, at once or when the wait
// begins; until then the node holds them, and takes them as plain peer exchange (dialed while it
// has fewer connections than its target). native/agent/swarm.c keeps the same rule.

/** The newest addresses a piece's referrals named, held: the head sends a piece to one node at a time. */
const HELD_PER_PIECE = 4

/** How a node reaches the peers it is told of (Connections). */
export interface Dialer {
  dial (address: string): void
  dialSome (addresses: readonly string[]): void
}

export class Referrals {
  private readonly dialer: Dialer
  private readonly waitedOn: (piece: number) => boolean
  /** Per piece no program waited on yet, the addresses its referrals named. */
  private readonly held = new Map<number, string[]>()

  /** `waitedOn`: whether a program's read or open waits on a piece now. */
  constructor (dialer: Dialer, waitedOn: (piece: number) => boolean) {
    this.dialer = dialer
    this.waitedOn = waitedOn
  }

  /** The head turned `piece` down and named where it went instead. */
  referred (piece: number, addresses: readonly string[]): void {
    if (this.waitedOn(piece)) {
      for (const address of addresses) this.dialer.dial(address)
      return
    }
    const held = [...this.held.get(piece) ?? [], ...addresses]
    this.held.set(piece, held.slice(-HELD_PER_PIECE))
    this.dialer.dialSome(addresses)
  }

  /** A program waits on `piece`: the nodes its referrals named are dialed. */
  waiting (piece: number): void {
    const held = this.held.get(piece)
    if (!held) return
    this.held.delete(piece)
    for (const address of held) this.dialer.dial(address)
  }

  /** `piece` is in: where it went no longer matters. */
  verified (piece: number): void {
    this.held.delete(piece)
  }
}
