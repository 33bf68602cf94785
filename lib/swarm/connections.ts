// The peer connections of one member of a job's swarm (the head's seeder or a node): it listens,
// dials the addresses it is given, runs the handshake, and keeps one connection per peer.
import net from 'node:net'
import { P2prunError } from '../errors.ts'
import { Wire, type WireHandler } from './wire.ts'

export interface ConnectionsOptions {
  readonly infoHash: Buffer
  readonly peerId: Buffer
  readonly pieceCount: number
  /** Port to listen on for peers; 0 for any free port. */
  readonly port: number
  /** Most connections, established and being set up, in both directions. */
  readonly maxConns: number
  readonly handler: WireHandler
  /** A connection that passed the handshake and the one-per-peer rule, before any message is read. */
  readonly onWire: (wire: Wire) => void
}

const HANDSHAKE_TIMEOUT_MS = 10_000
const DIAL_TIMEOUT_MS = 10_000
/** A persistent address (the head's seeder) that could not be reached is dialed again after this long. */
const REDIAL_MS = 1000
/** Peers may drop a connection silent for two minutes (BEP 3): say something every minute. */
const KEEPALIVE_MS = 60_000
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024)

export class Connections {
  readonly port: number
  /** The set-up connections, by peer id (hex): one per peer. */
  readonly wires = new Map<string, Wire>()
  private readonly opts: ConnectionsOptions
  private readonly server: net.Server
  private readonly ownHex: string
  /** Addresses dialed once: the tracker lists peers we may already know. */
  private readonly dialed = new Set<string>()
  private readonly timers = new Set<NodeJS.Timeout>()
  /** Every socket, set up or not: closing waits for none of them. */
  private readonly sockets = new Set<net.Socket>()
  private readonly keepAlive: NodeJS.Timeout
  private settingUp = 0
  private closed = false

  static async listen (opts: ConnectionsOptions): Promise<Connections> {
    const server = net.createServer({ noDelay: true })
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new P2prunError('SWARM',
        `cannot listen for peers on port ${opts.port}: ${err.code ?? err.message}`, { hint: 'choose another port, or 0 for any', cause: err })))
      server.listen(opts.port, () => resolve())
    })
    return new Connections(opts, server)
  }

  private constructor (opts: ConnectionsOptions, server: net.Server) {
    this.opts = opts
    this.server = server
    this.port = (server.address() as net.AddressInfo).port
    this.ownHex = opts.peerId.toString('hex')
    server.on('connection', (socket) => this.accept(socket))
    this.keepAlive = setInterval(() => {
      const quiet = performance.now() - KEEPALIVE_MS
      for (const wire of this.wires.values()) if (wire.lastWrite < quiet) wire.keepAlive()
    }, KEEPALIVE_MS / 2).unref()
  }

  /** Dials host:port unless it was dialed before; `persistent` addresses are dialed until reached. */
  dial (address: string, persistent = false): void {
    if (this.closed || this.dialed.has(address) || this.wires.size + this.settingUp >= this.opts.maxConns) return
    this.dialed.add(address)
    const colon = address.lastIndexOf(':')
    const host = address.slice(0, colon).replace(/^\[|\]$/g, '')
    const port = Number(address.slice(colon + 1))
    if (!host || !Number.isInteger(port) || port <= 0 || port > 65535) return
    // Reads land in one buffer shared by every dialed socket: a wire copies out what it keeps.
    let wire: Wire | undefined
    const socket = net.connect({
      host, port, noDelay: true, timeout: DIAL_TIMEOUT_MS,
      onread: { buffer: READ_BUFFER, callback: (n: number, buf: Uint8Array) => { wire?.receive(Buffer.from(buf.buffer, buf.byteOffset, n), true); return true } }
    })
    this.track(socket)
    socket.once('timeout', () => socket.destroy())
    socket.once('connect', () => {
      socket.setTimeout(0)
      wire = this.newWire(socket, true)
      this.setUp(wire).then((ok) => {
        if (!ok) this.again(address, persistent)
      })
    })
    socket.once('error', () => { if (!wire) this.again(address, persistent) })
  }

  close (): Promise<void> {
    if (this.closed) return Promise.resolve()
    this.closed = true
    clearInterval(this.keepAlive)
    for (const timer of this.timers) clearTimeout(timer)
    // Set up or not, every connection's socket is here; a wire goes with its socket.
    for (const socket of this.sockets) socket.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private track (socket: net.Socket): void {
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
  }

  private again (address: string, persistent: boolean): void {
    this.dialed.delete(address)
    if (!persistent || this.closed) return
    const timer = setTimeout(() => { this.timers.delete(timer); this.dial(address, true) }, REDIAL_MS)
    this.timers.add(timer)
  }

  private accept (socket: net.Socket): void {
    if (this.closed || this.wires.size + this.settingUp >= this.opts.maxConns) {
      socket.destroy()
      return
    }
    this.track(socket)
    const wire = this.newWire(socket, false)
    socket.on('data', (chunk: Buffer) => wire.receive(chunk, false))
    void this.setUp(wire)
  }

  private newWire (socket: net.Socket, outgoing: boolean): Wire {
    return new Wire(socket, {
      infoHash: this.opts.infoHash, peerId: this.opts.peerId, pieceCount: this.opts.pieceCount, outgoing, timeoutMs: HANDSHAKE_TIMEOUT_MS
    })
  }

  /** Resolves whether the connection reached a peer of this swarm. */
  private async setUp (wire: Wire): Promise<boolean> {
    this.settingUp++
    try {
      await wire.ready
    } catch {
      return false // refused, timed out or not a peer of this swarm: the wire destroyed its socket
    } finally {
      this.settingUp--
    }
    if (this.closed || wire.peerId === this.ownHex || !this.keep(wire)) {
      wire.destroy()
      return wire.peerId !== this.ownHex && !this.closed // a duplicate is a peer reached
    }
    this.wires.set(wire.peerId, wire)
    wire.socket.once('close', () => { if (this.wires.get(wire.peerId) === wire) this.wires.delete(wire.peerId) })
    this.opts.onWire(wire)
    wire.attach(this.opts.handler)
    return true
  }

  /**
   * One connection per pair of peers: two nodes that learn of each other from the tracker both
   * dial. Both ends keep the connection dialed by the smaller peer id; of two dialed by the same
   * end (the head reached by its seeder address and by the tracker's), the first.
   */
  private keep (wire: Wire): boolean {
    const other = this.wires.get(wire.peerId)
    if (!other || other.destroyed) return true
    if (other.outgoing === wire.outgoing) return false
    const keepDialer = this.ownHex < wire.peerId ? this.ownHex : wire.peerId
    const dialer = wire.outgoing ? this.ownHex : wire.peerId
    if (dialer !== keepDialer) return false
    other.destroy()
    return true
  }
}
