// webtorrent's defaults are built for strangers on the internet. A job's nodes cooperate, so this is
// the one place that turns those defaults into a cooperative, tracker-only swarm, and says why.
import { randomBytes } from 'node:crypto'
import type { ClientOptions, Torrent, TorrentOptions, Wire } from 'webtorrent'

export type Role = 'head' | 'node'

/** Peer-id prefixes (Azureus style) tell the head's seeder apart from nodes in the byte counters. */
const PEER_PREFIX: Record<Role, string> = { head: '-P2H010-', node: '-P2N010-' }
const HEAD_PREFIX_HEX = Buffer.from(PEER_PREFIX.head).toString('hex')

function newPeerId (role: Role): string {
  const id = PEER_PREFIX[role] + randomBytes(6).toString('hex')
  return Buffer.from(id).toString('hex')
}

export function isHeadPeerId (hexPeerId: string | undefined): boolean {
  return hexPeerId?.startsWith(HEAD_PREFIX_HEX) ?? false
}

export function isHeadWire (wire: Wire): boolean {
  return isHeadPeerId(wire.peerId)
}

export interface ClientTuning {
  readonly role: Role
  readonly port: number
  readonly maxConns: number
  readonly numwant: number
}

export function clientOptions (t: ClientTuning): ClientOptions {
  return {
    peerId: newPeerId(t.role),
    torrentPort: t.port,
    maxConns: t.maxConns,
    // Discovery is the job's tracker (and the seeder address handed out at launch) only: no DHT,
    // no local-service discovery, no peer exchange, no NAT traversal. uTP is off: on a cluster
    // TCP is faster and uTP's userspace congestion control costs CPU every node pays for.
    dht: false,
    lsd: false,
    utPex: false,
    natUpnp: false,
    natPmp: false,
    utp: false,
    webSeeds: false,
    // Protocol encryption only obfuscates traffic from ISPs; inside a job it is pure CPU cost.
    secure: 0,
    // bittorrent-tracker clients ask for 50 peers by default.
    tracker: { getAnnounceOpts: () => ({ numwant: t.numwant }) }
  }
}

export function torrentOptions (): TorrentOptions {
  return {
    // Every interested peer stays unchoked. `uploads: false`/0 means zero upload slots in
    // webtorrent, not unlimited; any number above the peer count disables choking in _rechoke.
    uploads: Number.POSITIVE_INFINITY,
    // Piece order is the PiecePicker's (picker.ts), not webtorrent's strategy.
    private: true
  }
}

/**
 * The connection-level tuning every torrent of p2prun gets, head and nodes alike; call it right
 * after client.add, before any peer connects (its 'ready' listener runs before the caller's).
 */
export function tuneConnections (torrent: Torrent, ownPeerId: string): void {
  disableNagle(torrent)
  onePerPeer(torrent, ownPeerId)
  haveOnlyToPeersWithout(torrent)
  torrent.once('ready', () => {
    skipMetadataExchange(torrent)
    dropRarityMap(torrent)
  })
}

/**
 * webtorrent leaves Nagle's algorithm on, so a 17-byte piece request waits for the previous
 * segment's delayed ACK (~20-40 ms). A program loading libraries page fault by page fault waits on
 * one such round trip per miss: measured 21 ms per FUSE read over loopback. Every peer connection
 * of the torrent gets TCP_NODELAY as soon as its wire exists.
 */
function disableNagle (torrent: Torrent): void {
  torrent.on('wire', (wire: Wire) => {
    const peers = (torrent as unknown as { _peers: Map<string, { wire?: Wire, conn?: { setNoDelay?: (on: boolean) => void } }> })._peers
    for (const peer of peers.values()) {
      if (peer.wire === wire) peer.conn?.setNoDelay?.(true)
    }
  })
}

/**
 * Every node has the description, so the metadata exchange (BEP 9) has nothing to do; yet
 * webtorrent's ut_metadata decodes the whole torrent and re-encodes its info dict, twice, on every
 * connection: 9% of a node's CPU at 16 nodes with a 40 KB description. ut_metadata only does that
 * for a Buffer, and webtorrent only fetches metadata when it has none: a non-Buffer marker turns
 * both off. (Fetching the description from peers, BEP 9, would cache the encoded info dict instead.)
 */
function skipMetadataExchange (torrent: Torrent): void {
  (torrent as unknown as { metadata: unknown }).metadata = { described: true }
}

/**
 * webtorrent keeps a rarity map for its rarest-first strategy whatever the strategy, and rebuilds
 * it from every peer's bitfield on each new connection and each bitfield: O(peers × pieces) per
 * event, O(peers² × pieces) per node over a launch, 1.3% of a node's CPU at 32 nodes. Neither the
 * head (which only uploads) nor the PiecePicker uses it.
 */
function dropRarityMap (torrent: Torrent): void {
  const t = torrent as unknown as { _rarityMap: { destroy (): void } | null }
  t._rarityMap?.destroy()
  t._rarityMap = null
}

/**
 * webtorrent tells every connected peer about every piece it verifies: N - 1 messages, and as many
 * small writes, per piece per node. A peer that holds the piece has no use for the news (the head
 * holds them all), so it is not told. 32 nodes, 100 Mbit/s: block 64-67 -> 55 s, eager 39-41 ->
 * 35 s, the head's CPU 2.9 -> 1.7 s.
 */
function haveOnlyToPeersWithout (torrent: Torrent): void {
  torrent.on('wire', (wire: Wire) => {
    const w = wire as unknown as { have: (i: number) => void, peerPieces: { get: (i: number) => boolean } }
    const have = w.have.bind(wire)
    w.have = (i) => { if (!w.peerPieces.get(i)) have(i) }
  })
}

interface PeerInternals { addr?: string, wire?: Wire | null }
interface WireWithType { type: string, peerId: string, destroyed: boolean, destroy (): void }

/**
 * Two nodes that learn of each other from the tracker both dial: two connections per pair, and
 * every `have`, request and handshake twice. Keep the connection dialed by the smaller peer id
 * (both ends decide alike; the head's id is always the smaller), drop the other, and do not let
 * webtorrent re-dial a dropped address while the kept connection lives. Two connections dialed by
 * the same end (a node reaching the head by the seeder address and by the tracker's) are told
 * apart by arrival: the later one goes. Should the two ends see them arrive in a different order,
 * both go, and webtorrent re-dials a second later.
 */
function onePerPeer (torrent: Torrent, ownPeerId: string): void {
  const t = torrent as unknown as { wires: WireWithType[], _peers: Map<string, PeerInternals>, _addPeer: (...args: unknown[]) => unknown }
  const suppressed = new Map<string, WireWithType>()
  const addPeer = t._addPeer.bind(torrent)
  t._addPeer = (peer: unknown, ...rest: unknown[]) => {
    const kept = typeof peer === 'string' ? suppressed.get(peer) : undefined
    return kept && !kept.destroyed ? null : addPeer(peer, ...rest)
  }
  torrent.on('wire', (added: Wire) => {
    const wire = added as unknown as WireWithType
    const other = t.wires.find((w) => w !== wire && !w.destroyed && w.peerId === wire.peerId)
    if (!other) return
    const keepDialer = ownPeerId < wire.peerId ? ownPeerId : wire.peerId
    const dialer = (w: WireWithType) => (w.type.endsWith('Outgoing') ? ownPeerId : w.peerId)
    const [drop, keep] = dialer(wire) === keepDialer ? [other, wire] : [wire, other]
    for (const [addr, peer] of t._peers) {
      if (peer.wire === (drop as unknown as Wire) && drop.type.endsWith('Outgoing')) suppressed.set(addr, keep)
    }
    drop.destroy()
  })
}
