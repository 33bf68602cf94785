// One BitTorrent peer connection: the handshake and messages of the peer wire protocol (BEP 3) with
// the Fast Extension (BEP 6: have-all, have-none, reject), framed over a TCP socket; in a job-only
// swarm also the extension protocol (BEP 10: the job proof, then peer exchange). It checks every
// message against its type before it is acted on (a peer's malformed message ends that connection,
// never the process), keeps the connection's protocol state (who chokes whom, which pieces the peer
// holds, our outstanding requests) and hands every message to its owner's WireHandler; which pieces
// to ask for, and whether to serve a request, is the owner's business.
//
// Written for a job's swarm, where every node moves the whole library set in and out: a message is
// parsed where it lies in the socket's chunk (no concatenation per message), a block is handed over
// as a view of that chunk, and a piece message goes out as one gathered write of its header and
// block. A node's connections go further once their handshake is through: the addon moves their
// bytes (native/peer-stream.c), reads each block asked for straight into its place in the node's
// store and hands this wire the other messages, in the same format, once per loop turn.
import type { Socket } from 'node:net'
import { native, type PeerStream } from '../native.ts'
import { Bitfield } from './bitfield.ts'
import { decodeDescMessage, decodeExtensionHandshake, decodePex, DESC_ID, encodeDescMessage, encodeExtensionHandshake, encodePex, UT_PEX_ID, type DescMessage } from './extensions.ts'
import { proof, proofMatches, type JobSecret } from './job-auth.ts'
import { plainIp } from './peer-address.ts'

/** The unit pieces are assembled in, and the request size BEP 3 clients accept. */
export const BLOCK_LENGTH = 16384
/** The largest request p2prun serves, and so the longest piece message it accepts. */
export const MAX_REQUEST_LENGTH = 1 << 17

/** Whether a request asks for bytes within a piece of `size` bytes, in one message we send. */
export function servable (req: BlockRequest, size: number): boolean {
  return req.length > 0 && req.length <= MAX_REQUEST_LENGTH && req.begin + req.length <= size
}

export interface BlockRequest {
  readonly index: number
  readonly begin: number
  readonly length: number
}

interface Outstanding extends BlockRequest {
  /** performance.now() when it was sent. */
  readonly at: number
}

/** What the owner of a wire is told. The wire has already updated its own state. */
export interface WireHandler {
  /** The peer's pieces changed: a bitfield, have-all or have-none (`index` undefined), or a have. */
  onPieces (wire: Wire, index?: number): void
  /** The peer choked or unchoked us. */
  onChoke (wire: Wire): void
  /** The peer wants pieces we have. */
  onInterested (wire: Wire): void
  onRequest (wire: Wire, request: BlockRequest): void
  /**
   * A block we asked for; `data` is a view of the socket's buffer, valid during the call, or of the
   * store where it already lies (a wire handed over to the addon).
   */
  onBlock (wire: Wire, request: BlockRequest, data: Buffer): void
  /** The peer turned down a request (BEP 6), or dropped it by choking us (without BEP 6). */
  onReject (wire: Wire, request: BlockRequest): void
  onClose (wire: Wire): void
  /** Peers the peer is connected to (ut_pex), as host:port; or, a referral, those it sent a piece it turned down to. */
  onPex? (wire: Wire, addresses: string[], referral: boolean): void
  /** A piece of the description asked for, sent, or refused (p2prun_desc). */
  onDesc? (wire: Wire, msg: DescMessage): void
}

const PROTOCOL = Buffer.from('\x13BitTorrent protocol', 'latin1')
const HANDSHAKE_LENGTH = 68
/** Byte 7 of the reserved field, bit 0x04: the Fast Extension. */
const FAST_BIT = 0x04
/** Byte 5 of the reserved field, bit 0x10: the extension protocol (BEP 10), which carries the job proof. */
const EXTENSION_BIT = 0x10
const EXTENDED = 20
/** The addon's record of a block it read into the store: an id no peer's message reaches us with. */
const PLACED = 0xff
const NOTHING = Buffer.alloc(0)
/**
 * While a message's body is on its way, the kernel may hold its remaining bytes (up to one read
 * buffer) until all are there: one wake-up and one read instead of one per ~1.5 KB segment on a
 * shaped link. Below LOW_WATER_MIN_BYTES the system call costs more than it saves.
 */
const LOW_WATER_MIN_BYTES = 4096
const LOW_WATER_MAX_BYTES = 64 * 1024
const MSG = {
  choke: 0, unchoke: 1, interested: 2, notInterested: 3, have: 4, bitfield: 5, request: 6, piece: 7, cancel: 8,
  haveAll: 0x0e, haveNone: 0x0f, reject: 0x10
} as const
/** Messages whose length is fixed (id byte included): anything else is a broken or hostile peer. */
const FIXED_LENGTH: ReadonlyMap<number, number> = new Map([
  [MSG.choke, 1], [MSG.unchoke, 1], [MSG.interested, 1], [MSG.notInterested, 1], [MSG.have, 5],
  [MSG.request, 13], [MSG.cancel, 13], [MSG.haveAll, 1], [MSG.haveNone, 1], [MSG.reject, 13]
])
/** BEP 6: a peer that did not announce the Fast Extension must not send its messages. */
const FAST_ONLY: ReadonlySet<number> = new Set([MSG.haveAll, MSG.haveNone, MSG.reject])

export interface HandshakeOptions {
  readonly infoHash: Buffer
  readonly peerId: Buffer
  readonly pieceCount: number
  /** Whether we dialed: the dialer speaks first, the other end first checks the infohash. */
  readonly outgoing: boolean
  readonly timeoutMs: number
  /** Sets the socket's receive low-water mark (SO_RCVLOWAT), where the platform allows. */
  readonly lowWater?: (bytes: number) => void
  /**
   * The job's secret: both ends must prove they hold it, in the BEP 10 handshake that follows the
   * BitTorrent one, before `ready` resolves and any message is handed over. Undefined: open swarm.
   */
  readonly secret?: JobSecret
  /** The port we listen on, told to the peer in that handshake (for its peer exchange). */
  readonly listenPort?: number
  /** The size of the description we can send (p2prun_desc), told in that handshake. */
  readonly descSize?: number
  /**
   * A connection only to fetch the description (we do not know the pieces yet): the peer's piece
   * messages (bitfield, have…) are not checked against a piece count, only ignored.
   */
  readonly descOnly?: boolean
  /** The node's store: once the handshakes are through, the addon moves the connection's bytes and places blocks there. */
  readonly store?: StoreTarget
}

/** Where a node's blocks go: the set's bytes (mapped) and their file, its piece length and its have bitfield (verified pieces are never written). */
export interface StoreTarget {
  readonly bytes: Buffer
  /** The file `bytes` maps: the addon writes blocks there (pwrite), and serves them from `bytes`. */
  readonly fd: number
  readonly pieceLength: number
  readonly have: Uint8Array
}

export class Wire {
  /** Node's socket, until the connection is handed over to the addon. */
  readonly socket: Socket
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  readonly outgoing: boolean
  /** The peer's id, hex; known once `ready` resolved. */
  peerId = ''
  /** Both ends support the Fast Extension. */
  fast = false
  /** Resolves when both handshakes are through; rejects (and destroys the socket) on any mismatch. */
  readonly ready: Promise<void>
  peerPieces: Bitfield
  peerChoking = true
  amChoking = true
  amInterested = false
  /** Requests we sent that are not answered yet, oldest first, and their bytes. */
  readonly outstanding: Outstanding[] = []
  outstandingBytes = 0
  /** performance.now() when the peer last answered a request of ours (a block or a reject). */
  private lastAnswer = -Infinity
  /** performance.now() of the last write, for keep-alives. */
  lastWrite = performance.now()
  destroyed = false
  /** Why the connection ended, once it has: a protocol violation names the offending message. */
  closeReason: string | undefined
  /** The peer answered the handshake but could not prove the job's secret: another job, or none. */
  notOfJob = false
  private readonly opts: HandshakeOptions
  /** A piece message of the largest request we send, or a bitfield of every piece: the peer sends nothing longer. */
  private readonly maxMessageLength: number
  private handler: WireHandler | undefined
  private shook: (() => void) | undefined
  private failed: ((err: Error) => void) | undefined
  /** Where the connection stands: the BitTorrent handshake, the job proof, or messages. */
  private phase: 'handshake' | 'proof' | 'messages' = 'handshake'
  private peerIdBytes = Buffer.alloc(0)
  /** What the peer's extension handshake said: its ut_pex id and the port it listens on. */
  private peerPexId: number | undefined
  private peerDescId: number | undefined
  listenPort: number | undefined
  /** The size of the description the peer can send (its extension handshake); undefined: none. */
  peerDescSize: number | undefined
  /** Whether writes are being gathered until the end of this event-loop turn. */
  private corked = false
  private readonly chunks: Buffer[] = []
  private buffered = 0
  private messageLength = -1
  /** The socket's receive low-water mark as last set. */
  private lowWater = 1
  /** The connection in the addon's hands; before it is, what is sent waits in `handingOver`. */
  private stream: PeerStream | undefined
  private handingOver: Buffer[] | undefined

  /** Starts the handshake on a connected socket; its bytes arrive through `receive`. */
  constructor (socket: Socket, opts: HandshakeOptions) {
    this.socket = socket
    this.remoteAddress = socket.remoteAddress
    this.remotePort = socket.remotePort
    this.outgoing = opts.outgoing
    this.opts = opts
    this.peerPieces = new Bitfield(opts.pieceCount)
    this.maxMessageLength = Math.max(9 + MAX_REQUEST_LENGTH, 1 + this.peerPieces.bytes.length)
    socket.setNoDelay(true)
    this.ready = new Promise<void>((resolve, reject) => { this.shook = resolve; this.failed = reject })
    const timer = setTimeout(() => this.fail('no handshake in time'), opts.timeoutMs)
    this.ready.then(() => clearTimeout(timer), () => clearTimeout(timer))
    socket.on('error', this.onSocketError)
    socket.on('close', this.onSocketClose)
    if (opts.outgoing) this.socket.write(this.ownHandshake())
  }

  /** Where the peer listens (its address, the port its extension handshake gave), as host:port; undefined until it said. */
  get listenAddress (): string | undefined {
    const ip = plainIp(this.remoteAddress)
    return ip && this.listenPort !== undefined ? `${ip}:${this.listenPort}` : undefined
  }

  /**
   * Bytes from the socket. A `borrowed` chunk is the socket's reusable read buffer (net's onread),
   * valid only during this call: what stays queued is copied.
   *
   * Nothing a peer sends may take the process down: it runs in a socket's callback with no handler
   * above it, so whatever goes wrong while parsing or handling the peer's bytes (a check missed
   * here, a bug in the owner) ends this connection only.
   */
  receive (chunk: Buffer, borrowed: boolean): void {
    if (this.destroyed) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
    this.consume()
    const last = this.chunks.length - 1
    if (borrowed && last >= 0 && !this.destroyed) this.chunks[last] = Buffer.from(this.chunks[last] as Buffer)
  }

  /** Starts delivering messages (any that arrived with the handshake first). */
  attach (handler: WireHandler): void {
    this.handler = handler
    this.consume()
  }

  sendPieces (have: Bitfield): void {
    if (this.fast && have.count === 0) return this.send(MSG.haveNone)
    if (this.fast && have.complete) return this.send(MSG.haveAll)
    if (have.count > 0) this.send(MSG.bitfield, Buffer.from(have.bytes))
  }

  /** Tells the peer of a piece we now have: `msg` is haveMessage(index), made once for every peer told. */
  have (msg: Buffer): void {
    if (!this.destroyed) this.write(msg)
  }

  unchoke (): void {
    if (!this.amChoking) return
    this.amChoking = false
    this.send(MSG.unchoke)
  }

  interested (on: boolean): void {
    if (this.amInterested === on) return
    this.amInterested = on
    this.send(on ? MSG.interested : MSG.notInterested)
  }

  request (req: BlockRequest): void {
    if (this.stream) native?.peerExpect(this.stream, req.index, req.begin, req.length)
    this.outstanding.push({ ...req, at: performance.now() })
    this.outstandingBytes += req.length
    this.send(MSG.request, triple(req))
  }

  /**
   * Since when the peer owes us an answer, with nothing from it meanwhile: the oldest outstanding
   * request's time, or its last answer's if later (a peer with a deep queue on a slow link answers
   * steadily, just late); undefined with nothing outstanding.
   */
  owesSince (): number | undefined {
    const oldest = this.outstanding[0]
    return oldest && Math.max(oldest.at, this.lastAnswer)
  }

  /** Forgets outstanding requests (timed out, or the peer left): a block that still arrives is dropped. */
  forget (): BlockRequest[] {
    if (this.stream) native?.peerForget(this.stream)
    this.outstandingBytes = 0
    return this.outstanding.splice(0)
  }

  piece (req: BlockRequest, data: Buffer): void {
    if (this.destroyed) return
    const header = Buffer.allocUnsafe(13)
    header.writeUInt32BE(9 + data.length, 0)
    header[4] = MSG.piece
    header.writeUInt32BE(req.index, 5)
    header.writeUInt32BE(req.begin, 9)
    this.write(header)
    this.write(data)
  }

  /** Turns a request down; without the Fast Extension there is no such message and it is dropped. */
  reject (req: BlockRequest): void {
    if (this.fast) this.send(MSG.reject, triple(req))
  }

  /** A p2prun_desc message, if the peer takes them; false if it does not. */
  desc (msg: DescMessage): boolean {
    if (this.peerDescId === undefined) return false
    this.send(EXTENDED, encodeDescMessage(this.peerDescId, msg))
    return true
  }

  /** Tells the peer of other peers (ut_pex), if it takes such messages. */
  pex (addresses: readonly string[], referral = false): void {
    if (this.peerPexId !== undefined && addresses.length > 0) this.send(EXTENDED, encodePex(this.peerPexId, addresses, referral))
  }

  keepAlive (): void {
    if (!this.destroyed) this.write(Buffer.alloc(4))
  }

  /** Ends the connection; `reason` says why when it is the peer's fault. */
  destroy (reason?: string): void {
    if (this.destroyed) return
    this.destroyed = true
    this.closeReason = reason ?? 'closed'
    this.chunks.length = 0
    this.buffered = 0
    if (this.stream) native?.peerClose(this.stream)
    else this.socket.destroy()
    this.failed?.(new Error(reason ?? 'closed during the handshake'))
    this.handler?.onClose(this)
  }

  private readonly onSocketClose = (): void => this.fail('closed')
  private readonly onSocketError = (err: Error): void => this.fail(err.message)

  private fail (why: string): void {
    this.failed?.(new Error(why))
    this.destroy(why)
  }

  private failProof (why: string): void {
    this.notOfJob = true
    this.fail(`is not of this job: ${why}`)
  }

  /** Parses what is buffered as far as the connection's phase allows; guarded (see receive). */
  private consume (): void {
    if (this.handingOver) return // the addon frames what arrived from here on
    try {
      if (this.phase === 'handshake') this.parseHandshake()
      if (this.phase === 'proof' || this.handler) this.parse()
    } catch (err) {
      this.destroy(`failed on the peer's data: ${(err as Error).message}`)
    }
  }

  private ownHandshake (): Buffer {
    return Buffer.concat([PROTOCOL, Buffer.from([0, 0, 0, 0, 0, this.opts.secret ? EXTENSION_BIT : 0, 0, FAST_BIT]),
      this.opts.infoHash, this.opts.peerId])
  }

  private parseHandshake (): void {
    if (this.buffered < HANDSHAKE_LENGTH) return
    const got = this.take(HANDSHAKE_LENGTH)
    if (!got.subarray(0, 20).equals(PROTOCOL)) return this.fail('not a BitTorrent peer')
    if (!got.subarray(28, 48).equals(this.opts.infoHash)) return this.fail('the peer has another torrent')
    if (!this.outgoing) this.socket.write(this.ownHandshake())
    this.fast = ((got[27] ?? 0) & FAST_BIT) !== 0
    this.peerIdBytes = Buffer.from(got.subarray(48, 68))
    this.peerId = this.peerIdBytes.toString('hex')
    if (!this.opts.secret) return this.open()
    if (((got[25] ?? 0) & EXTENSION_BIT) === 0) return this.failProof('it cannot prove the job\'s secret')
    this.phase = 'proof'
    const auth = proof(this.opts.secret, 'peer', this.opts.infoHash, this.opts.peerId, this.peerIdBytes)
    this.send(EXTENDED, encodeExtensionHandshake(auth, this.opts.listenPort ?? 0, this.opts.descSize))
  }

  /** The peer's first message must be its BEP 10 handshake, with the proof made for this pair of peers. */
  private checkProof (msg: Buffer): void {
    const secret = this.opts.secret as JobSecret
    const handshake = msg[0] === EXTENDED ? decodeExtensionHandshake(msg.subarray(1)) : undefined
    if (!handshake?.auth || !proofMatches(secret, handshake.auth, 'peer', this.opts.infoHash, this.peerIdBytes, this.opts.peerId)) {
      return this.failProof('its proof of the job\'s secret is missing or wrong')
    }
    this.peerPexId = handshake.pexId
    this.peerDescId = handshake.descId
    this.peerDescSize = handshake.descSize
    this.listenPort = handshake.listenPort
    this.open()
  }

  private open (): void {
    this.phase = 'messages'
    if (this.opts.store) this.handOver(this.opts.store)
    const shook = this.shook
    this.shook = undefined
    this.failed = undefined
    shook?.()
  }

  /**
   * From here the addon moves the connection's bytes: Node stops reading the socket, what it still
   * has to send goes out, then the addon takes a duplicate of its descriptor, with the bytes read
   * but not parsed, and Node's socket is closed. Sent meanwhile: waits. Without the addon (a
   * checkout never built), Node keeps the socket.
   */
  private handOver (store: StoreTarget): void {
    const handle = (this.socket as unknown as { _handle?: { readStop(): number, fd: number } })._handle
    if (!native || !handle) return
    handle.readStop()
    this.handingOver = []
    this.socket.uncork()
    this.socket.write(NOTHING, (err) => {
      if (this.destroyed) return
      if (err) return this.fail(err.message)
      try {
        this.stream = (native as NonNullable<typeof native>).adoptPeerSocket(handle.fd, Buffer.concat(this.chunks), store.bytes, store.fd, store.pieceLength,
          store.have, this.maxMessageLength, (inbox, ended) => this.fromStream(inbox, ended))
      } catch (e) {
        return this.fail(`cannot hand the connection over: ${(e as Error).message}`)
      }
      this.chunks.length = 0
      this.buffered = 0
      // Node's socket goes; the connection stays open on the addon's descriptor.
      this.socket.removeListener('close', this.onSocketClose).removeListener('error', this.onSocketError).on('error', () => {})
      this.socket.destroy()
      for (const req of this.outstanding) native?.peerExpect(this.stream, req.index, req.begin, req.length)
      const waiting = this.handingOver ?? []
      this.handingOver = undefined
      for (const buf of waiting) this.write(buf)
    })
  }

  /** What the addon read (whole messages), and why the connection ended; nothing here may throw into it. */
  private fromStream (inbox: Buffer | undefined, ended: string | undefined): void {
    if (inbox) {
      if (this.handler && this.chunks.length === 0) this.deliver(inbox)
      else this.receive(inbox, false)
    }
    if (ended !== undefined) this.destroy(ended)
  }

  /**
   * The addon's messages (whole ones, back to back: native/peer-stream.c frames them), dispatched
   * where they lie in its batch, without the queue `receive` keeps for bytes that may end
   * mid-message, and a have without even a view: at 32 nodes a node hears ~23,000 haves, and
   * the queue's views and bookkeeping were most of their cost (about half, measured on 69,000
   * haves in a fresh process). Guarded as consume.
   */
  private deliver (inbox: Buffer): void {
    try {
      for (let at = 0; at < inbox.length && !this.destroyed;) {
        const length = inbox.readUInt32BE(at)
        if (at + 4 + length > inbox.length) return this.destroy('the addon handed over a message cut short')
        if (length === 5 && inbox[at + 4] === MSG.have) this.onHave(inbox.readUInt32BE(at + 5))
        else if (length > 0) this.dispatch(inbox.subarray(at + 4, at + 4 + length))
        at += 4 + length
      }
    } catch (err) {
      this.destroy(`failed on the peer's data: ${(err as Error).message}`)
    }
  }

  private send (id: number, payload?: Buffer): void {
    if (this.destroyed) return
    const length = 1 + (payload?.length ?? 0)
    const msg = Buffer.allocUnsafe(4 + length)
    msg.writeUInt32BE(length, 0)
    msg[4] = id
    payload?.copy(msg, 5)
    this.write(msg)
  }

  /**
   * Everything written in one event-loop turn goes out as one gathered write at its end: a node
   * sends requests, haves and blocks to a peer several at a turn, and this makes one system call
   * of them (measured within the noise against one call per message, and kept for that).
   */
  private write (buf: Buffer): void {
    if (this.stream) {
      this.lastWrite = performance.now()
      return native?.peerWrite(this.stream, buf)
    }
    if (this.handingOver) return void this.handingOver.push(buf)
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      setImmediate(() => {
        this.corked = false
        if (!this.destroyed) this.socket.uncork()
      })
      this.lastWrite = performance.now()
    }
    this.socket.write(buf)
  }

  private parse (): void {
    while (!this.destroyed && (this.phase === 'proof' || this.handler)) {
      if (this.messageLength < 0) {
        if (this.buffered < 4) return this.awaitBytes(1)
        this.messageLength = this.take(4).readUInt32BE(0)
        if (this.messageLength > this.maxMessageLength) return this.destroy(`sent a message of ${this.messageLength} bytes`)
      }
      if (this.buffered < this.messageLength) return this.awaitBytes(this.messageLength - this.buffered)
      const length = this.messageLength
      this.messageLength = -1
      if (length === 0) continue // keep-alive
      if (this.phase === 'proof') this.checkProof(this.take(length))
      else this.dispatch(this.take(length))
    }
  }

  /** Asks the kernel to wake us when `n` more bytes are in (a message's rest), or at once for small rests. */
  private awaitBytes (n: number): void {
    const mark = n >= LOW_WATER_MIN_BYTES ? Math.min(n, LOW_WATER_MAX_BYTES) : 1
    if (mark === this.lowWater || !this.opts.lowWater) return
    this.lowWater = mark
    this.opts.lowWater(mark)
  }

  /** The next n bytes: a view when they lie in one chunk (the usual case), else a copy. */
  private take (n: number): Buffer {
    this.buffered -= n
    const first = this.chunks[0] as Buffer
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      return first.subarray(0, n)
    }
    const out = Buffer.allocUnsafe(n)
    let filled = 0
    while (filled < n) {
      const chunk = this.chunks[0] as Buffer
      const k = Math.min(chunk.length, n - filled)
      chunk.copy(out, filled, 0, k)
      filled += k
      if (k === chunk.length) this.chunks.shift()
      else this.chunks[0] = chunk.subarray(k)
    }
    return out
  }

  private dispatch (msg: Buffer): void {
    const h = this.handler as WireHandler
    const id = msg[0] as number
    const fixed = FIXED_LENGTH.get(id)
    if (fixed !== undefined && msg.length !== fixed) return this.destroy(`sent message ${id} of ${msg.length} bytes, not ${fixed}`)
    if (FAST_ONLY.has(id) && !this.fast) return this.destroy(`sent message ${id} of the Fast Extension, which it did not announce`)
    if (this.opts.descOnly && id !== EXTENDED) return
    switch (id) {
      case MSG.choke:
        this.peerChoking = true
        // Without the Fast Extension a choke silently drops every pending request.
        if (!this.fast) for (const req of this.forget()) h.onReject(this, req)
        return h.onChoke(this)
      case MSG.unchoke:
        this.peerChoking = false
        return h.onChoke(this)
      case MSG.interested:
        return h.onInterested(this)
      case MSG.notInterested:
        return // a peer that is done stays unchoked: there is nothing to take back
      case MSG.have:
        return this.onHave(msg.readUInt32BE(1))
      case MSG.bitfield:
        // BEP 3: a bitfield of the wrong size drops the connection.
        if (msg.length !== 1 + this.peerPieces.bytes.length) return this.destroy(`sent a bitfield of ${msg.length - 1} bytes for ${this.peerPieces.length} pieces`)
        this.peerPieces = new Bitfield(this.peerPieces.length, msg.subarray(1))
        return h.onPieces(this)
      case MSG.haveAll:
        this.peerPieces = Bitfield.full(this.peerPieces.length)
        return h.onPieces(this)
      case MSG.haveNone:
        this.peerPieces = new Bitfield(this.peerPieces.length)
        return h.onPieces(this)
      case MSG.request:
        return h.onRequest(this, readTriple(msg))
      case MSG.piece: {
        if (msg.length < 9) return this.destroy(`sent a piece message of ${msg.length} bytes`)
        const index = msg.readUInt32BE(1)
        const begin = msg.readUInt32BE(5)
        const data = msg.subarray(9)
        const req = this.settle(index, begin, data.length)
        if (!req) return // not asked for, or given up on: dropped
        return h.onBlock(this, req, data)
      }
      case MSG.reject: {
        const { index, begin, length } = readTriple(msg)
        const req = this.settle(index, begin, length)
        if (req) h.onReject(this, req)
        return
      }
      case PLACED: {
        // The addon read a block we asked for into its place in the store (or dropped it: its piece
        // was verified meanwhile, and the store holds those bytes); it alone sends this id.
        const store = this.opts.store
        if (!this.stream || !store || msg.length !== 13) return
        const { index, begin, length } = readTriple(msg)
        const req = this.settle(index, begin, length)
        if (!req) return
        const start = index * store.pieceLength + begin
        return h.onBlock(this, req, store.bytes.subarray(start, start + length))
      }
      case EXTENDED: {
        // Extension messages come from peers that proved the job's secret only.
        if (this.phase !== 'messages' || !this.opts.secret) return
        if (msg[1] === UT_PEX_ID) {
          const pex = decodePex(msg.subarray(1))
          return h.onPex?.(this, pex.added, pex.referral)
        }
        const desc = msg[1] === DESC_ID ? decodeDescMessage(msg.subarray(1)) : undefined
        if (desc) h.onDesc?.(this, desc)
        return
      }
      // cancel: requests are answered as they arrive, so a cancel always comes too late.
      // Anything else (port, suggest, allowed-fast, extensions we did not announce) is ignored.
    }
  }

  private onHave (index: number): void {
    if (this.opts.descOnly) return
    if (index >= this.peerPieces.length) return this.destroy(`has piece ${index} of ${this.peerPieces.length}`)
    if (this.peerPieces.set(index)) this.handler?.onPieces(this, index)
  }

  /** Removes and returns the outstanding request a piece or reject answers. */
  private settle (index: number, begin: number, length: number): BlockRequest | undefined {
    const i = this.outstanding.findIndex((r) => r.index === index && r.begin === begin && r.length === length)
    if (i < 0) return undefined
    this.outstandingBytes -= length
    this.lastAnswer = performance.now()
    return this.outstanding.splice(i, 1)[0]
  }
}

/**
 * The have message for piece `index`. A node tells each of its peers that lacks the piece (up to
 * ~100): one message for all of them, not a payload and a message per peer (at 32 nodes, the
 * allocations and copies of ~23,000 haves were ~4 % of an agent's CPU samples).
 */
export function haveMessage (index: number): Buffer {
  const msg = Buffer.allocUnsafe(9)
  msg.writeUInt32BE(5, 0)
  msg[4] = MSG.have
  msg.writeUInt32BE(index, 5)
  return msg
}

function triple (req: BlockRequest): Buffer {
  const b = Buffer.allocUnsafe(12)
  b.writeUInt32BE(req.index, 0)
  b.writeUInt32BE(req.begin, 4)
  b.writeUInt32BE(req.length, 8)
  return b
}

function readTriple (msg: Buffer): BlockRequest {
  return { index: msg.readUInt32BE(1), begin: msg.readUInt32BE(5), length: msg.readUInt32BE(9) }
}
