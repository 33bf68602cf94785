// Choking, for a job's swarm: none. Every peer that says it is interested is unchoked at once and
// stays so (no upload slots, no tit-for-tat): the nodes cooperate. Waiting for the interest rather
// than unchoking on connect also keeps the unchoke from arriving before a client has set up its
// side of the connection: webtorrent, which attaches its handlers after the handshake, missed an
// early unchoke under load and never asked for a block.
import type { Wire } from './wire.ts'

export function unchokeAtOnce (wire: Wire): void {
  wire.unchoke()
}
