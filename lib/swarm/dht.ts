// Trackerless discovery (BEP 5): the job's nodes find each other through a DHT of their own, with
// no tracker announce at all. The head runs the first DHT node, which is every node's bootstrap (no
// public router is ever contacted); a node announces its port under the infohash and looks it up
// again now and then; in a swarm with a job secret, peer exchange (ut_pex) spreads what one lookup
// found (an open swarm's wire has no extension protocol: its nodes meet through the DHT alone). At
// 16,000 nodes the announces land on the ~8 DHT nodes nearest the infohash, not all on the head.
//
// The DHT speaks unauthenticated UDP: anyone who reaches a node's DHT port can learn the job's
// peer addresses or list false ones. Neither gets them a byte: every peer connection proves the
// job's secret (job-auth.ts), and a dialed address that does not is dropped. Malformed or hostile
// DHT messages cost only themselves: bittorrent-dht's handlers throw on some (a number where it
// expects bytes), so every message is handled inside a guard (guardedSocket).
import dgram from 'node:dgram'
import DHT from 'bittorrent-dht'
import { addressToward } from './local-address.ts'
import { hostPort } from './peer-address.ts'

/** A lookup (and announce) again after this, ±50%: a node that joined late is found by then. */
const RELOOKUP_MS = 30_000
/** Until the bootstrap answers, asked again after this, doubling up to RETRY_MAX_MS, ±50%. */
const RETRY_MS = 1000
const RETRY_MAX_MS = 30_000

type Dht = InstanceType<typeof DHT>

export interface DhtCounts {
  /** DHT messages whose handling threw: malformed or hostile, dropped. */
  readonly badMessages: number
}

/** A UDP socket whose message handlers run guarded: a message that makes one throw is dropped (and counted, where `counts` is given). */
function guardedSocket (counts?: { badMessages: number }): dgram.Socket {
  const socket = dgram.createSocket('udp4')
  const on = socket.on.bind(socket)
  socket.on = ((event: string, listener: (...args: unknown[]) => void) => on(event, event !== 'message' ? listener : (...args: unknown[]) => {
    try {
      listener(...args)
    } catch {
      if (counts) counts.badMessages++
    }
  })) as typeof socket.on
  return socket
}

/**
 * Peers a DHT node keeps per round of its peer store (bittorrent-dht keeps two: up to twice this).
 * A get_peers answer lists every peer kept, in one UDP datagram: with bittorrent-dht's default
 * (10,000) the answer of a node nearest the infohash outgrew a datagram (64 KiB, ~8,000 peers)
 * once that many nodes had announced, and was never sent. 50 keeps the newest 50-100 announcers,
 * an answer of at most ~900 bytes, within one Ethernet frame; peer exchange spreads the rest.
 */
const PEERS_KEPT = 50

function newDht (bootstrap: readonly string[] | false, counts?: { badMessages: number }): Dht {
  const dht = new DHT({ bootstrap: bootstrap === false ? false : [...bootstrap], socket: guardedSocket(counts), maxPeers: PEERS_KEPT })
  // Warnings are other nodes' malformed messages and timeouts: counted where they matter, never fatal.
  dht.on('warning', () => {})
  return dht
}

function listen (dht: Dht, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err)
    dht.once('error', onError)
    dht.listen(port, host, () => { dht.off('error', onError); resolve() })
  })
}

/** Stops a DHT node; resolves once its socket is closed. */
function destroy (dht: Dht): Promise<void> {
  return new Promise((resolve) => dht.destroy(() => resolve()))
}

/** Asks the bootstrap nodes again: a DHT node that never heard from them has no one else to ask. */
function addBootstrap (dht: Dht, bootstrap: readonly string[]): void {
  for (const address of bootstrap) {
    const node = hostPort(address)
    if (node) dht.addNode(node)
  }
}

export interface DhtBootstrap {
  /** host:port (UDP) that nodes bootstrap from. */
  readonly address: string
  /** Nodes that announced themselves to this DHT node under `infoHash`. */
  announced (infoHash: string): number
  counts (): DhtCounts
  close (): Promise<void>
}

/** The head's DHT node on host:port (0: any free port): the job's bootstrap, itself bootstrapped from no one. */
export async function startDhtBootstrap (host: string, port: number, advertise: string): Promise<DhtBootstrap> {
  const counts = { badMessages: 0 }
  const dht = newDht(false, counts)
  const announced = new Map<string, Set<string>>()
  dht.on('announce', (peer: { host: string, port: number }, infoHash: Buffer) => {
    const key = Buffer.from(infoHash).toString('hex')
    const set = announced.get(key) ?? new Set()
    set.add(`${peer.host}:${peer.port}`)
    announced.set(key, set)
  })
  await listen(dht, host, port)
  return {
    address: `${advertise}:${dht.address().port}`,
    announced: (infoHash) => announced.get(infoHash)?.size ?? 0,
    counts: () => ({ ...counts }),
    close: () => destroy(dht)
  }
}

export interface DhtDiscoveryOptions {
  readonly bootstrap: readonly string[]
  readonly infoHash: Buffer
  /** This node's address toward the head (where the DHT socket binds) and its BitTorrent port. */
  readonly host: string
  readonly port: number
  readonly onPeers: (addresses: string[]) => void
  readonly onWarning: (message: string) => void
  /** The DHT node the node looked for the description with, taken over instead of starting another. */
  readonly from?: DhtLookup
  /** Runs the next round `ms` from now: setTimeout, unless a test holds rounds back to see what one round found. */
  readonly later?: (round: () => void, ms: number) => NodeJS.Timeout
}

/** A node's membership in the job's DHT: announces its port, and hands the peers it finds to `onPeers`. */
export class DhtDiscovery {
  private readonly opts: DhtDiscoveryOptions
  private dht: Dht | undefined
  private timer: NodeJS.Timeout | undefined
  private failures = 0
  private stopped = false
  /** Peers the DHT told of so far, this node aside: a round that adds none looks again after its announce. */
  private found = 0

  constructor (opts: DhtDiscoveryOptions) {
    this.opts = opts
  }

  start (): void {
    const self = `${this.opts.host}:${this.opts.port}`
    const running = this.opts.from?.handOver()
    const dht = running ?? newDht(this.opts.bootstrap)
    this.dht = dht
    dht.on('peer', (peer: { host: string, port: number }) => {
      const address = `${peer.host}:${peer.port}`
      if (address === self) return
      this.found++
      this.opts.onPeers([address])
    })
    dht.on('error', (err: Error) => {
      if (!this.stopped) this.opts.onWarning(`the DHT failed: ${err.message}; finding peers through the head's seeder only`)
    })
    if (running) this.round()
    else listen(dht, this.opts.host, 0).then(() => this.round(), () => {})
  }

  /** Nothing to tell a DHT: a node is listed as long as it announces. */
  completed (): void {}

  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearTimeout(this.timer)
    if (this.dht) await destroy(this.dht)
  }

  /**
   * A lookup, then an announce with the tokens it got; again later. A lookup that found no one is
   * made again once the announce is stored: nodes that start together each look before any of them
   * announced, and in an open swarm (no peer exchange) they would meet only rounds later, after a
   * short job is over. Of two nodes that both look after announcing, the later look finds the other.
   */
  private round (): void {
    const dht = this.dht
    if (this.stopped || !dht) return
    const before = this.found
    dht.lookup(this.opts.infoHash, () => {
      if (this.stopped) return
      if (dht.nodes.count() === 0) return this.bootstrapAgain()
      this.failures = 0
      dht.announce(this.opts.infoHash, this.opts.port, () => {
        if (this.stopped) return
        if (this.found > before) return this.later(RELOOKUP_MS)
        dht.lookup(this.opts.infoHash, () => this.later(RELOOKUP_MS))
      })
    })
  }

  /** No DHT node answered: the bootstrap is down or not yet up. Said once; asked again in seconds. */
  private bootstrapAgain (): void {
    this.failures++
    if (this.failures === 1) {
      this.opts.onWarning(`the DHT bootstrap ${this.opts.bootstrap.join(', ')} does not answer; retrying`)
    }
    if (this.dht) addBootstrap(this.dht, this.opts.bootstrap)
    this.later(Math.min(RETRY_MS * 2 ** (this.failures - 1), RETRY_MAX_MS))
  }

  private later (ms: number): void {
    clearTimeout(this.timer)
    if (this.stopped) return
    const later = this.opts.later ?? ((round, ms) => setTimeout(round, ms).unref())
    this.timer = later(() => this.round(), ms * (0.5 + Math.random()))
  }
}

/**
 * A DHT node that only looks (a node that has no description yet looks for its holders: nodes
 * announce once they joined, i.e. once they had it). One serves all of a node's lookups, round
 * after round, rather than a new DHT node per round, each one more node for the head to meet; the
 * node's own discovery then takes it over (DhtDiscovery's `from`), so a node is one DHT node.
 */
export class DhtLookup {
  private readonly dht: Dht
  private readonly bootstrap: readonly string[]
  private handedOver = false

  private constructor (dht: Dht, bootstrap: readonly string[]) {
    this.dht = dht
    this.bootstrap = bootstrap
  }

  /** Its UDP socket on this host's address toward the first bootstrap node, where the node will listen too. */
  static async toward (bootstrap: readonly string[]): Promise<DhtLookup> {
    return DhtLookup.open(bootstrap, await addressToward(bootstrap[0] as string))
  }

  /** Its UDP socket on `host` (the address toward the bootstrap). */
  static async open (bootstrap: readonly string[], host: string): Promise<DhtLookup> {
    const dht = newDht(bootstrap)
    dht.on('error', () => {})
    try {
      await listen(dht, host, 0)
    } catch (err) {
      await destroy(dht)
      throw err
    }
    return new DhtLookup(dht, bootstrap)
  }

  /** The UDP port its socket is bound to. */
  get port (): number {
    return this.dht.address().port
  }

  /** Its DHT node, now DhtDiscovery's: closing this lookup no longer stops it. */
  handOver (): Dht {
    this.handedOver = true
    this.dht.removeAllListeners('error')
    return this.dht
  }

  /** Peers listed under `infoHash` now; errors if no DHT node answers in `timeoutMs`. */
  peers (infoHash: Buffer, timeoutMs: number): Promise<string[]> {
    const dht = this.dht
    const where = this.bootstrap.join(', ')
    // A bootstrap that did not answer before is asked again.
    if (dht.nodes.count() === 0) addBootstrap(dht, this.bootstrap)
    const found = new Set<string>()
    const onPeer = (peer: { host: string, port: number }) => found.add(`${peer.host}:${peer.port}`)
    dht.on('peer', onPeer)
    return new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the DHT bootstrap ${where} did not answer in ${timeoutMs / 1000} s`)), timeoutMs)
      dht.lookup(infoHash, () => {
        clearTimeout(timer)
        if (dht.nodes.count() === 0) reject(new Error(`the DHT bootstrap ${where} does not answer`))
        else resolve([...found])
      })
    }).finally(() => dht.off('peer', onPeer))
  }

  /** Stops its DHT node, unless it was handed over. */
  close (): Promise<void> {
    return this.handedOver ? Promise.resolve() : destroy(this.dht)
  }
}
