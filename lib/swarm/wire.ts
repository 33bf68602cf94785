// One BitTorrent peer connection: the handshake and messages of the peer wire protocol (BEP 3) with
// the Fast Extension (BEP 6: have-all, have-none, reject), framed over a TCP socket. It keeps the
// connection's protocol state (who chokes whom, which pieces the peer holds, our outstanding
// requests) and hands every message to its owner's WireHandler; which pieces to ask for, and
// whether to serve a request, is the owner's business.
//
// Written for a job's swarm, where every node moves the whole library set in and out: a message is
// parsed where it lies in the socket's chunk (no concatenation per message), a block is handed over
// as a view of that chunk, and a piece message goes out as one gathered write of its header and
// block.
import type { Socket } from 'node:net'
import { Bitfield } from './bitfield.ts'

export const BLOCK_LENGTH = 16384

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
  onRequest (wire: Wire, request: BlockRequest): void
  /** A block we asked for; `data` is a view of the socket's buffer, valid during the call. */
  onBlock (wire: Wire, request: BlockRequest, data: Buffer): void
  /** The peer turned down a request (BEP 6), or dropped it by choking us (without BEP 6). */
  onReject (wire: Wire, request: BlockRequest): void
  onClose (wire: Wire): void
}

const PROTOCOL = Buffer.from('\x13BitTorrent protocol', 'latin1')
const HANDSHAKE_LENGTH = 68
/** Byte 7 of the reserved field, bit 0x04: the Fast Extension. */
const FAST_BIT = 0x04
const MSG = {
  choke: 0, unchoke: 1, interested: 2, notInterested: 3, have: 4, bitfield: 5, request: 6, piece: 7, cancel: 8,
  haveAll: 0x0e, haveNone: 0x0f, reject: 0x10
} as const
/** A bitfield for a million pieces, or a piece message of the largest block peers send. */
const MAX_MESSAGE_LENGTH = 1 << 17

export interface HandshakeOptions {
  readonly infoHash: Buffer
  readonly peerId: Buffer
  readonly pieceCount: number
  /** Whether we dialed: the dialer speaks first, the other end first checks the infohash. */
  readonly outgoing: boolean
  readonly timeoutMs: number
}

export class Wire {
  readonly socket: Socket
  readonly outgoing: boolean
  /** The peer's id, hex. */
  readonly peerId: string
  /** Both ends support the Fast Extension. */
  readonly fast: boolean
  peerPieces: Bitfield
  peerChoking = true
  amChoking = true
  amInterested = false
  /** Requests we sent that are not answered yet, oldest first. */
  readonly outstanding: Outstanding[] = []
  /** Block payload bytes received from and sent to this peer. */
  downloaded = 0
  uploaded = 0
  /** performance.now() of the last write, for keep-alives. */
  lastWrite = performance.now()
  destroyed = false
  private handler: WireHandler | undefined
  private readonly chunks: Buffer[] = []
  private buffered = 0
  private messageLength = -1

  private constructor (socket: Socket, outgoing: boolean, peerId: string, fast: boolean, pieceCount: number) {
    this.socket = socket
    this.outgoing = outgoing
    this.peerId = peerId
    this.fast = fast
    this.peerPieces = new Bitfield(pieceCount)
  }

  /** Exchanges handshakes on a connected socket; rejects (and destroys the socket) on any mismatch. */
  static handshake (socket: Socket, opts: HandshakeOptions): Promise<Wire> {
    socket.setNoDelay(true)
    const ours = Buffer.concat([PROTOCOL, Buffer.from([0, 0, 0, 0, 0, 0, 0, FAST_BIT]), opts.infoHash, opts.peerId])
    if (opts.outgoing) socket.write(ours)
    return new Promise((resolve, reject) => {
      let got: Buffer = Buffer.alloc(0)
      const fail = (why: string) => { cleanup(); socket.destroy(); reject(new Error(why)) }
      const timer = setTimeout(() => fail('no handshake in time'), opts.timeoutMs)
      const onClose = () => fail('closed during the handshake')
      const onError = (err: Error) => fail(err.message)
      const onData = (chunk: Buffer) => {
        got = got.length === 0 ? chunk : Buffer.concat([got, chunk])
        if (got.length < HANDSHAKE_LENGTH) return
        if (!got.subarray(0, 20).equals(PROTOCOL)) return fail('not a BitTorrent peer')
        if (!got.subarray(28, 48).equals(opts.infoHash)) return fail('the peer has another torrent')
        cleanup()
        if (!opts.outgoing) socket.write(ours)
        const fast = ((got[27] ?? 0) & FAST_BIT) !== 0
        const wire = new Wire(socket, opts.outgoing, got.subarray(48, 68).toString('hex'), fast, opts.pieceCount)
        const rest = got.subarray(HANDSHAKE_LENGTH)
        if (rest.length > 0) wire.chunks.push(Buffer.from(rest))
        wire.buffered = rest.length
        resolve(wire)
      }
      const cleanup = () => {
        clearTimeout(timer)
        socket.off('data', onData).off('close', onClose).off('error', onError)
      }
      socket.on('data', onData).on('close', onClose).on('error', onError)
    })
  }

  /** Starts delivering messages (any that arrived with the handshake first). */
  attach (handler: WireHandler): void {
    this.handler = handler
    this.socket.on('data', (chunk: Buffer) => { this.chunks.push(chunk); this.buffered += chunk.length; this.parse() })
    this.socket.on('error', () => this.destroy())
    this.socket.on('close', () => this.destroy())
    this.parse()
  }

  sendPieces (have: Bitfield): void {
    if (this.fast && have.count === 0) return this.send(MSG.haveNone)
    if (this.fast && have.complete) return this.send(MSG.haveAll)
    if (have.count > 0) this.send(MSG.bitfield, Buffer.from(have.bytes))
  }

  have (index: number): void {
    this.send(MSG.have, u32(index))
  }

  unchoke (): void {
    this.amChoking = false
    this.send(MSG.unchoke)
  }

  interested (on: boolean): void {
    if (this.amInterested === on) return
    this.amInterested = on
    this.send(on ? MSG.interested : MSG.notInterested)
  }

  request (req: BlockRequest): void {
    this.outstanding.push({ ...req, at: performance.now() })
    this.send(MSG.request, triple(req))
  }

  /** Forgets outstanding requests (timed out): a block that still arrives is dropped. */
  forget (): BlockRequest[] {
    return this.outstanding.splice(0)
  }

  piece (req: BlockRequest, data: Buffer): void {
    if (this.destroyed) return
    const header = Buffer.allocUnsafe(13)
    header.writeUInt32BE(9 + data.length, 0)
    header[4] = MSG.piece
    header.writeUInt32BE(req.index, 5)
    header.writeUInt32BE(req.begin, 9)
    this.socket.cork()
    this.socket.write(header)
    this.socket.write(data)
    this.socket.uncork()
    this.uploaded += data.length
    this.lastWrite = performance.now()
  }

  /** Turns a request down; without the Fast Extension there is no such message and it is dropped. */
  reject (req: BlockRequest): void {
    if (this.fast) this.send(MSG.reject, triple(req))
  }

  keepAlive (): void {
    if (this.destroyed) return
    this.socket.write(Buffer.alloc(4))
    this.lastWrite = performance.now()
  }

  destroy (): void {
    if (this.destroyed) return
    this.destroyed = true
    this.socket.destroy()
    this.handler?.onClose(this)
  }

  private send (id: number, payload?: Buffer): void {
    if (this.destroyed) return
    const length = 1 + (payload?.length ?? 0)
    const msg = Buffer.allocUnsafe(4 + length)
    msg.writeUInt32BE(length, 0)
    msg[4] = id
    payload?.copy(msg, 5)
    this.socket.write(msg)
    this.lastWrite = performance.now()
  }

  private parse (): void {
    while (!this.destroyed) {
      if (this.messageLength < 0) {
        if (this.buffered < 4) return
        this.messageLength = this.take(4).readUInt32BE(0)
        if (this.messageLength > MAX_MESSAGE_LENGTH) return this.destroy()
      }
      if (this.buffered < this.messageLength) return
      const length = this.messageLength
      this.messageLength = -1
      if (length > 0) this.dispatch(this.take(length)) // length 0: keep-alive
    }
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
    switch (msg[0]) {
      case MSG.choke:
        this.peerChoking = true
        // Without the Fast Extension a choke silently drops every pending request.
        if (!this.fast) for (const req of this.outstanding.splice(0)) h.onReject(this, req)
        return h.onChoke(this)
      case MSG.unchoke:
        this.peerChoking = false
        return h.onChoke(this)
      case MSG.interested:
      case MSG.notInterested:
        return // every peer is unchoked whether it is interested or not
      case MSG.have: {
        const index = msg.readUInt32BE(1)
        if (index >= this.peerPieces.length) return this.destroy()
        if (this.peerPieces.set(index)) h.onPieces(this, index)
        return
      }
      case MSG.bitfield:
        this.peerPieces = new Bitfield(this.peerPieces.length, msg.subarray(1))
        return h.onPieces(this)
      case MSG.haveAll:
        this.peerPieces = Bitfield.full(this.peerPieces.length)
        return h.onPieces(this)
      case MSG.haveNone:
        this.peerPieces = new Bitfield(this.peerPieces.length)
        return h.onPieces(this)
      case MSG.request:
        if (msg.length !== 13) return this.destroy()
        return h.onRequest(this, readTriple(msg))
      case MSG.piece: {
        if (msg.length < 9) return this.destroy()
        const index = msg.readUInt32BE(1)
        const begin = msg.readUInt32BE(5)
        const data = msg.subarray(9)
        const req = this.settle(index, begin, data.length)
        if (!req) return // not asked for, or given up on: dropped
        this.downloaded += data.length
        return h.onBlock(this, req, data)
      }
      case MSG.reject: {
        if (msg.length !== 13) return this.destroy()
        const { index, begin, length } = readTriple(msg)
        const req = this.settle(index, begin, length)
        if (req) h.onReject(this, req)
        return
      }
      // cancel: requests are answered as they arrive, so a cancel always comes too late.
      // Anything else (port, suggest, allowed-fast, extensions we did not announce) is ignored.
    }
  }

  /** Removes and returns the outstanding request a piece or reject answers. */
  private settle (index: number, begin: number, length: number): BlockRequest | undefined {
    const i = this.outstanding.findIndex((r) => r.index === index && r.begin === begin && r.length === length)
    return i < 0 ? undefined : this.outstanding.splice(i, 1)[0]
  }
}

function u32 (n: number): Buffer {
  const b = Buffer.allocUnsafe(4)
  b.writeUInt32BE(n, 0)
  return b
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
