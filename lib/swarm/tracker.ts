// The job's tracker: a small HTTP tracker (BEP 3 announces, BEP 23 compact replies) that knows only
// the job's infohashes, hands out the description, and stops the head on its secret URL.
//
// Owned here rather than taken from bittorrent-tracker, whose swarm walks its whole peer table on
// every announce (3.6 ms of head CPU per announce at 16,000 peers, in the process that also seeds):
// here a swarm is an array with an index by peer id, so an announce costs O(numwant) — a random
// sample — whatever the number of nodes. Without `open`, every request must carry a proof made
// from the job's secret (job-auth.ts): no one outside the job learns the nodes' addresses, joins
// the list, or reads the description. There is no scrape: nothing outside the job needs it.
import type { IncomingMessage, ServerResponse } from 'node:http'
import bencode from 'bencode'
import { P2prunError } from '../errors.ts'
import { AUTH_PARAM, proofMatches, type JobSecret } from './job-auth.ts'
import { listenOn } from './listen.ts'
import { encodeCompact, plainIp } from './peer-address.ts'
import { isHeadPeerId } from './peer-id.ts'
import { PEEK_PARAM } from './announce.ts'

// Not `import http from 'node:http'`: as an ES module its namespace evaluates every export, and
// WebSocket's loads undici, http2 and tls, ~20 ms of a launch's start (announce.ts does the same).
const http = process.getBuiltinModule('node:http')

export interface TrackerOptions {
  readonly host: string
  readonly port: number
  /** The only infohashes it will track (hex); serve and unserve change them while it runs. */
  readonly infoHashes: readonly string[]
  /** Description files it hands out at DESCRIPTION_PATH/<infohash>.torrent, so nodes need no shared FS. */
  readonly descriptions?: ReadonlyMap<string, Uint8Array>
  /**
   * POST DESCRIPTION_PATH + 'stop/<token>' (optionally ?job=ID, the ending Slurm job) calls this: how
   * a job's epilog stops a head it cannot signal.
   */
  readonly stop?: { readonly token: string, readonly onStop: (jobId: string | undefined) => void }
  readonly maxPeers: number
  readonly announcePeers: number
  /** The job's secret, which announces and description requests must prove; undefined: open to anyone. */
  readonly secret?: JobSecret
}

export interface Tracker {
  readonly port: number
  /** Peers currently registered for an infohash. */
  peerCount (infoHash: string): number
  /** ms since the tracker started at which each peer announced it had everything. */
  completions (): readonly number[]
  /** Bytes of descriptions sent (GET DESCRIPTION_PATH…). */
  descriptionBytes (): number
  /** Nodes (not the head) that ever registered for an infohash, whether or not they left since. */
  nodesJoined (infoHash: string): number
  /** Tracks one more infohash (a system-wide head's new set), handing out its description if given. */
  serve (infoHash: string, description?: Uint8Array): void
  /** Forgets an infohash: its swarm and description. */
  unserve (infoHash: string): void
  close (): Promise<void>
}


export const DESCRIPTION_PATH = '/p2prun/'
/** Nodes announce again after this long; a whole job fits in it, and nodes that leave say so. */
const INTERVAL_S = 300
const DEFAULT_NUMWANT = 50

interface Peer {
  readonly id: string
  ip: string
  port: number
  complete: boolean
}

/**
 * One torrent's peers: an array for O(1) sampling and removal (swap with the last), indexed by peer
 * id. Beside it, each peer's 6 bytes of a compact peer list (BEP 23) at 6 × its index, made once
 * when it registers: a reply copies 100 of them out of one buffer. Copied out of 100 buffers of
 * their own, scattered over the heap, this was the tracker's largest cost per announce (profiled).
 */
class Swarm {
  readonly peers: Peer[] = []
  /** How many peers have everything (kept as peers come, go and complete: never counted per announce). */
  seeds = 0
  /** Nodes (not the head) that ever registered, whether or not they left since. */
  joined = 0
  private readonly index = new Map<string, number>()
  private addrs = Buffer.alloc(6 * 256)
  /** 6, or 0 for an address BEP 23 cannot carry (IPv6): such a peer is left out of compact lists. */
  private addrLength = new Uint8Array(256)
  private marks = new Uint32Array(0)
  private stamp = 0

  get (id: string): Peer | undefined {
    const i = this.index.get(id)
    return i === undefined ? undefined : this.peers[i]
  }

  add (peer: Peer): void {
    const i = this.peers.length
    this.index.set(peer.id, i)
    this.peers.push(peer)
    if (peer.complete) this.seeds++
    if (this.addrLength.length <= i) {
      const addrs = Buffer.alloc(this.addrs.length * 2)
      this.addrs.copy(addrs)
      this.addrs = addrs
      const lengths = new Uint8Array(this.addrLength.length * 2)
      lengths.set(this.addrLength)
      this.addrLength = lengths
    }
    this.address(i)
  }

  /** A registered peer announced from another address. */
  moved (peer: Peer, ip: string, port: number): void {
    peer.ip = ip
    peer.port = port
    const i = this.index.get(peer.id)
    if (i !== undefined) this.address(i)
  }

  setComplete (peer: Peer, complete: boolean): void {
    if (peer.complete !== complete) this.seeds += complete ? 1 : -1
    peer.complete = complete
  }

  remove (id: string): void {
    const i = this.index.get(id)
    if (i === undefined) return
    if (this.peers[i]?.complete) this.seeds--
    const last = this.peers.pop() as Peer
    this.index.delete(id)
    if (i < this.peers.length) {
      this.peers[i] = last
      this.index.set(last.id, i)
      this.addrs.copy(this.addrs, 6 * i, 6 * this.peers.length, 6 * this.peers.length + 6)
      this.addrLength[i] = this.addrLength[this.peers.length] as number
    }
  }

  /** Indices of up to `count` peers other than `except`, chosen at random: O(count), not O(peers). */
  sample (count: number, except: string): number[] {
    const own = this.index.get(except)
    const n = this.peers.length
    if (count >= n - (own === undefined ? 0 : 1)) return Array.from({ length: n }, (_, i) => i).filter((i) => i !== own)
    // Indices already picked are marked with this call's stamp: no set to build per announce.
    if (this.marks.length < n) this.marks = new Uint32Array(2 * n)
    const stamp = this.stamp = (this.stamp + 1) >>> 0 || 1
    // The asker is marked picked up front: indices compare faster than 40-character ids.
    if (own !== undefined) this.marks[own] = stamp
    const out: number[] = []
    while (out.length < count) {
      const i = (Math.random() * n) | 0
      if (this.marks[i] === stamp) continue
      this.marks[i] = stamp
      out.push(i)
    }
    return out
  }

  /** A compact peer list (BEP 23) of the peers at these indices. */
  compactList (picked: readonly number[]): Buffer {
    const out = Buffer.allocUnsafe(6 * picked.length)
    let at = 0
    for (const i of picked) {
      if (this.addrLength[i] === 0) continue
      // Byte by byte: Buffer.copy's own overhead is larger than 6 bytes.
      for (let k = 6 * i; k < 6 * i + 6; k++) out[at++] = this.addrs[k] as number
    }
    return out.subarray(0, at)
  }

  private address (i: number): void {
    const peer = this.peers[i] as Peer
    const compact = encodeCompact([`${peer.ip}:${peer.port}`])
    compact.copy(this.addrs, 6 * i)
    this.addrLength[i] = compact.length === 6 ? 6 : 0
  }
}

export async function startTracker (opts: TrackerOptions): Promise<Tracker> {
  const swarms = new Map(opts.infoHashes.map((h) => [h.toLowerCase(), new Swarm()]))
  const descriptions = new Map(opts.descriptions ?? [])
  const started = performance.now()
  const completed: number[] = []
  let descriptionBytes = 0

  const announce = (query: Query, remoteIp: string): Record<string, unknown> => {
    const infoHash = query.bytes('info_hash')
    const peerId = query.bytes('peer_id')
    const port = Number(query.text('port'))
    if (infoHash?.length !== 20 || peerId?.length !== 20 || !Number.isInteger(port) || port < 1 || port > 65535) {
      return { 'failure reason': 'an announce needs info_hash and peer_id of 20 bytes and a port' }
    }
    const hash = infoHash.toString('hex')
    const swarm = swarms.get(hash)
    if (!swarm) return { 'failure reason': `this tracker serves only its job; unknown infohash ${hash}` }
    if (opts.secret && !proofMatches(opts.secret, query.text(AUTH_PARAM), 'announce', infoHash, peerId)) {
      return { 'failure reason': 'this tracker serves only its job\'s nodes: the announce lacks a valid proof of the job\'s secret' }
    }
    const id = peerId.toString('hex')
    const event = query.text('event')
    const wanted = Number(query.text('numwant') ?? DEFAULT_NUMWANT)
    const numwant = Math.min(Number.isInteger(wanted) && wanted >= 0 ? wanted : DEFAULT_NUMWANT, opts.announcePeers)
    if (query.text(PEEK_PARAM) === '1') return { interval: INTERVAL_S, peers: swarm.compactList(swarm.sample(numwant, id)) }
    if (event === 'stopped') {
      swarm.remove(id)
      return { interval: INTERVAL_S, peers: Buffer.alloc(0) }
    }
    const complete = query.text('left') === '0'
    let peer = swarm.get(id)
    if (!peer) {
      if (swarm.peers.length >= opts.maxPeers) evictOne(swarm)
      peer = { id, ip: remoteIp, port, complete: false }
      swarm.add(peer)
      if (!isHeadPeerId(id)) swarm.joined++
    } else if (peer.ip !== remoteIp || peer.port !== port) {
      swarm.moved(peer, remoteIp, port)
    }
    if (complete && !peer.complete && !isHeadPeerId(id)) completed.push(Math.round(performance.now() - started))
    swarm.setComplete(peer, complete)
    const picked = swarm.sample(numwant, id)
    return {
      interval: INTERVAL_S,
      complete: swarm.seeds,
      incomplete: swarm.peers.length - swarm.seeds,
      peers: query.text('compact') === '0'
        ? picked.map((i) => {
          const p = swarm.peers[i] as Peer
          return { 'peer id': Buffer.from(p.id, 'hex'), ip: p.ip, port: p.port }
        })
        : swarm.compactList(picked)
    }
  }

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/'
    const [pathname = '/', search = ''] = url.split('?', 2)
    const query = new Query(search)
    const reply = (status: number, body: string | Uint8Array, type = 'text/plain') => {
      res.writeHead(status, { 'content-type': type })
      res.end(body)
    }
    if (req.method === 'GET' && pathname === '/announce') {
      return reply(200, bencode.encode(announce(query, plainIp(req.socket.remoteAddress))), 'text/plain')
    }
    if (opts.stop && req.method === 'POST' && pathname === `${DESCRIPTION_PATH}stop/${opts.stop.token}`) {
      reply(200, 'stopping\n')
      const job = query.text('job')
      return opts.stop.onStop(job && /^\d+$/.test(job) ? job : undefined)
    }
    const described = req.method === 'GET' && pathname.startsWith(DESCRIPTION_PATH) && pathname.endsWith('.torrent')
    const infoHash = described ? pathname.slice(DESCRIPTION_PATH.length, -'.torrent'.length).toLowerCase() : ''
    const body = descriptions.get(infoHash)
    if (!body) return reply(404, 'not found\n')
    if (opts.secret && !proofMatches(opts.secret, query.text(AUTH_PARAM), 'description', Buffer.from(infoHash, 'hex'))) {
      return reply(403, 'this description is only for the job\'s nodes\n')
    }
    descriptionBytes += body.length
    reply(200, body, 'application/x-bittorrent')
  }
  const server = http.createServer((req, res) => {
    // No request may take the head down: whatever a client sent, it gets an error reply.
    try {
      handle(req, res)
    } catch {
      if (!res.headersSent) res.writeHead(400)
      res.end()
    }
  })
  // A client that goes away mid-request is its own problem, never this process's.
  server.on('clientError', (_err, socket) => socket.destroy())
  await listenOn(server, opts.host, opts.port).catch((err: NodeJS.ErrnoException) => {
    throw new P2prunError('TRACKER', `tracker cannot listen on ${opts.host}:${opts.port}: ${err.code ?? err.message}`,
      { hint: 'choose another --tracker-port or free that one', cause: err })
  })
  const address = server.address()
  let closing: Promise<void> | undefined
  return {
    port: typeof address === 'object' && address ? address.port : opts.port,
    completions: () => completed,
    descriptionBytes: () => descriptionBytes,
    nodesJoined: (infoHash) => swarms.get(infoHash.toLowerCase())?.joined ?? 0,
    peerCount: (infoHash) => swarms.get(infoHash.toLowerCase())?.peers.length ?? 0,
    serve: (infoHash, description) => {
      const h = infoHash.toLowerCase()
      if (!swarms.has(h)) swarms.set(h, new Swarm())
      if (description) descriptions.set(h, description)
    },
    unserve: (infoHash) => {
      swarms.delete(infoHash.toLowerCase())
      descriptions.delete(infoHash.toLowerCase())
    },
    close: () => (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    }))
  }
}

/** A full swarm makes room by forgetting one node at random; the head's seeder is never forgotten. */
function evictOne (swarm: Swarm): void {
  for (let tries = 0; tries < 8; tries++) {
    const victim = swarm.peers[Math.floor(Math.random() * swarm.peers.length)]
    if (victim && !isHeadPeerId(victim.id)) return swarm.remove(victim.id)
  }
}

/**
 * A query string whose values may be binary (info_hash and peer_id are 20 raw bytes, percent-
 * encoded): URLSearchParams would decode them as UTF-8 and mangle them.
 */
class Query {
  private readonly raw = new Map<string, string>()

  constructor (search: string) {
    for (const pair of search.split('&')) {
      const eq = pair.indexOf('=')
      if (eq > 0 && !this.raw.has(pair.slice(0, eq))) this.raw.set(pair.slice(0, eq), pair.slice(eq + 1))
    }
  }

  bytes (name: string): Buffer | undefined {
    const v = this.raw.get(name)
    if (v === undefined) return undefined
    const out = Buffer.allocUnsafe(v.length)
    let n = 0
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i)
      const hi = c === 0x25 ? hexValue(v.charCodeAt(i + 1)) : -1
      const lo = hi >= 0 ? hexValue(v.charCodeAt(i + 2)) : -1
      if (lo >= 0) {
        out[n++] = hi * 16 + lo
        i += 2
      } else {
        out[n++] = c === 0x2b ? 0x20 : c & 0xff
      }
    }
    return out.subarray(0, n)
  }

  text (name: string): string | undefined {
    return this.bytes(name)?.toString('latin1')
  }
}

/** A hex digit's value, or -1 (also for NaN: a % at the end of the string). */
function hexValue (c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  const lower = c | 0x20
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1
}
