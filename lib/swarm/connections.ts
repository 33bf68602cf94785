// The peer connections of one member of a job's swarm (the head's seeder or a node): it listens on
// one address, dials the addresses it is given (again, with backoff, when a connection is lost),
// runs the handshake, keeps one connection per peer, refuses peers it dropped for a while, and
// tells each new peer where others listen (peer exchange).
import net from 'node:net'
import { P2prunError } from '../errors.ts'
import type { JobSecret } from './job-auth.ts'
import { setRcvLowat } from './low-water.ts'
import { listenOn } from './listen.ts'
import { hostPort } from './peer-address.ts'
import { isHeadPeerId } from './peer-id.ts'
import { Wire, type StoreTarget, type WireHandler } from './wire.ts'
import type { DescriptionServer } from './description-exchange.ts'
import type { DescMessage } from './extensions.ts'

export interface ConnectionsOptions {
  readonly infoHash: Buffer
  readonly peerId: Buffer
  readonly pieceCount: number
  /** Address and port to listen on for peers; port 0 for any free port. */
  readonly host: string
  readonly port: number
  /** Most connections, established and being set up, in both directions. */
  readonly maxConns: number
  /**
   * Peers told of (a tracker, the DHT, peer exchange: `dialSome`) are dialed only while there are
   * fewer connections than this; others dial this node too, so its degree ends near twice that.
   * Dialing every one made the swarm a full mesh (native/agent/main.c's dial_compact: the same rule).
   */
  readonly dialTarget: number
  readonly handler: WireHandler
  /** A connection that passed the handshake and the one-per-peer rule, before any message is read. */
  readonly onWire: (wire: Wire) => void
  /** The job's secret, which every peer must prove (see Wire); undefined: an open swarm. */
  readonly secret?: JobSecret
  /** Dial the peers other peers tell of (peer exchange); the head, which dials no one, does not. */
  readonly learnPeers: boolean
  /** Whether the head's referral is dialed whole now (see setUp); false: as other peer exchange. Default: true. */
  readonly dialReferrals?: () => boolean
  /** Told, once per address, why a persistent address (the head's seeder) was reached but refused. */
  readonly warn?: (line: string) => void
  /** Hands peers the description (job-only swarms: the exchange needs the job's proof). */
  readonly description?: DescriptionServer
  /** A node's store: its connections are handed to the addon after their handshake (see Wire). */
  readonly store?: StoreTarget
}

const HANDSHAKE_TIMEOUT_MS = 10_000
const DIAL_TIMEOUT_MS = 10_000
/**
 * An address dialed again after its connection failed or was lost: after REDIAL_MS, doubling up
 * to REDIAL_MAX_MS, each wait jittered by ±50% so nodes that lost the same head do not come back
 * in step. Small, so a head restarted on the same address is found again within seconds.
 */
const REDIAL_MS = 1000
const REDIAL_MAX_MS = 4000
/** A peer's address (not a persistent one: the head's seeder) failing this often in a row has left. */
const REDIAL_TRIES = 5
/** A peer dropped for bad data or unanswered requests is not taken back for this long. */
const BAN_MS = 60_000
/**
 * Connections one remote address may have in their handshake at once. Without it, anyone could
 * hold every slot of the head's seeder with idle sockets (each held until its handshake times out);
 * a node dials a peer once, and nodes sharing a host (emulated ones) stay well under it.
 */
const SETTING_UP_PER_HOST = 8
/** Peers told of to a new connection (ut_pex): enough to reach the swarm without the tracker. */
const PEX_PEERS = 50
/** Peers may drop a connection silent for two minutes (BEP 3): say something every minute. */
const KEEPALIVE_MS = 60_000
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024)

/** An address we dial, and keep dialing while the connection to it is lost. */
interface Dialed {
  readonly address: string
  readonly host: string
  readonly port: number
  /** Dialed until the end (the head's seeder); other addresses REDIAL_TRIES times in a row. */
  readonly persistent: boolean
  failures: number
  /** The peer it reached, once it has. */
  peerId?: string
  /** Whether a refusal was reported (persistent addresses: once). */
  warned?: boolean
}

export class Connections {
  readonly port: number
  /** The set-up connections, by peer id (hex): one per peer. */
  readonly wires = new Map<string, Wire>()
  private readonly opts: ConnectionsOptions
  private readonly server: net.Server
  private readonly ownHex: string
  /** Addresses we dial, by host:port: the tracker lists peers we may already know. */
  private readonly dialed = new Map<string, Dialed>()
  /** performance.now() until which a peer is refused, by peer id. */
  private readonly banned = new Map<string, number>()
  private readonly timers = new Set<NodeJS.Timeout>()
  /** Every socket, set up or not: closing waits for none of them. */
  private readonly sockets = new Set<net.Socket>()
  private readonly keepAlive: NodeJS.Timeout
  private settingUp = 0
  /** Accepted connections still in their handshake, by remote address. */
  private readonly settingUpFrom = new Map<string, number>()
  /** Dialed sockets not connected yet (setUp counts them from then on). */
  private dialing = 0
  private closed = false

  static async listen (opts: ConnectionsOptions): Promise<Connections> {
    const server = net.createServer({ noDelay: true })
    await listenOn(server, opts.host, opts.port).catch((err: NodeJS.ErrnoException) => {
      throw new P2prunError('SWARM', `cannot listen for peers on ${opts.host}:${opts.port}: ${err.code ?? err.message}`,
        { hint: err.code === 'EADDRNOTAVAIL' ? 'give an address of this host' : 'choose another port, or 0 for any', cause: err })
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

  /** Dials host:port unless it is dialed already; `persistent` addresses are dialed until reached, and again when lost. */
  dial (address: string, persistent = false): void {
    const target = hostPort(address)
    if (this.closed || this.dialed.has(address) || this.full() || !target) return
    const dialed: Dialed = { address, ...target, persistent, failures: 0 }
    this.dialed.set(address, dialed)
    this.connect(dialed)
  }

  /** Some of `addresses` (peers told of), from a random place, dialed while there are fewer than dialTarget connections. */
  dialSome (addresses: readonly string[]): void {
    const from = Math.floor(Math.random() * addresses.length)
    for (let k = 0; k < addresses.length && this.wires.size + this.settingUp + this.dialing < this.opts.dialTarget; k++) {
      this.dial(addresses[(from + k) % addresses.length] as string)
    }
  }

  /** Drops a peer that sent bad data or left requests unanswered, and refuses it for BAN_MS. */
  ban (peerId: string, reason: string): void {
    this.banned.set(peerId, performance.now() + BAN_MS)
    this.wires.get(peerId)?.destroy(reason)
  }

  /** Drops a connection; a dialed address is dialed again after the usual wait. */
  drop (peerId: string, reason: string): void {
    this.wires.get(peerId)?.destroy(reason)
  }

  close (): Promise<void> {
    if (this.closed) return Promise.resolve()
    this.closed = true
    clearInterval(this.keepAlive)
    for (const timer of this.timers) clearTimeout(timer)
    // A connection being set up has its socket here; one set up may be in the addon's hands.
    for (const wire of this.wires.values()) wire.destroy()
    for (const socket of this.sockets) socket.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private full (): boolean {
    return this.wires.size + this.settingUp >= this.opts.maxConns
  }

  private connect (dialed: Dialed): void {
    const { host, port } = dialed
    // Reads land in one buffer shared by every dialed socket: a wire copies out what it keeps.
    let wire: Wire | undefined
    const socket = net.connect({
      host, port, noDelay: true, timeout: DIAL_TIMEOUT_MS,
      onread: { buffer: READ_BUFFER, callback: (n: number, buf: Uint8Array) => { wire?.receive(Buffer.from(buf.buffer, buf.byteOffset, n), true); return true } }
    })
    this.track(socket)
    this.dialing++
    let counted = true
    const connectedOrGone = () => { if (counted) { counted = false; this.dialing-- } }
    socket.once('connect', connectedOrGone)
    socket.once('close', connectedOrGone)
    socket.once('timeout', () => socket.destroy())
    socket.once('connect', () => {
      socket.setTimeout(0)
      wire = this.newWire(socket, true)
      this.setUp(wire).then((reached) => {
        if (!reached) {
          // A head that answers but is not of this job (another secret, or none) is a setup error, not a network one.
          if (dialed.persistent && !dialed.warned && wire?.notOfJob) {
            dialed.warned = true
            this.opts.warn?.(`the seeder at ${dialed.address} ${wire?.closeReason}: is it serving this job, with the same P2PRUN_SECRET (or --open, and no secret here)?`)
          }
          return this.redial(dialed)
        }
        dialed.failures = 0
        dialed.peerId = (wire as Wire).peerId
      })
    })
    socket.once('error', () => { if (!wire) this.redial(dialed) })
  }

  /** The connection to a dialed address failed or was lost: dial it again after a jittered wait, or give it up. */
  private redial (dialed: Dialed): void {
    if (this.closed) return
    dialed.failures++
    if (!dialed.persistent && dialed.failures > REDIAL_TRIES) {
      this.dialed.delete(dialed.address)
      return
    }
    const backoff = Math.min(REDIAL_MS * 2 ** (dialed.failures - 1), REDIAL_MAX_MS) * (0.5 + Math.random())
    const bannedFor = dialed.peerId === undefined ? 0 : (this.banned.get(dialed.peerId) ?? 0) - performance.now()
    const timer = setTimeout(() => {
      this.timers.delete(timer)
      if (this.closed) return
      if (this.full()) return this.redial(dialed)
      this.connect(dialed)
    }, Math.max(backoff, bannedFor))
    this.timers.add(timer)
  }

  private track (socket: net.Socket): void {
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
  }

  private accept (socket: net.Socket): void {
    const from = socket.remoteAddress ?? ''
    const pending = this.settingUpFrom.get(from) ?? 0
    if (this.closed || this.full() || pending >= SETTING_UP_PER_HOST) {
      socket.destroy()
      return
    }
    this.settingUpFrom.set(from, pending + 1)
    this.track(socket)
    const wire = this.newWire(socket, false)
    socket.on('data', (chunk: Buffer) => wire.receive(chunk, false))
    void this.setUp(wire).finally(() => {
      const left = (this.settingUpFrom.get(from) ?? 1) - 1
      if (left > 0) this.settingUpFrom.set(from, left)
      else this.settingUpFrom.delete(from)
    })
  }

  private newWire (socket: net.Socket, outgoing: boolean): Wire {
    return new Wire(socket, {
      infoHash: this.opts.infoHash, peerId: this.opts.peerId, pieceCount: this.opts.pieceCount, outgoing, timeoutMs: HANDSHAKE_TIMEOUT_MS,
      lowWater: setRcvLowat && ((bytes) => setRcvLowat?.(socket, bytes)),
      secret: this.opts.secret,
      listenPort: this.port,
      descSize: this.opts.description?.size,
      store: this.opts.store
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
    if ((this.banned.get(wire.peerId) ?? 0) > performance.now()) {
      wire.destroy('banned')
      return false
    }
    if (this.closed || wire.peerId === this.ownHex || !this.keep(wire)) {
      wire.destroy()
      return wire.peerId !== this.ownHex && !this.closed // a duplicate is a peer reached
    }
    this.wires.set(wire.peerId, wire)
    this.opts.onWire(wire)
    const description = this.opts.description
    const handler = this.opts.handler
    wire.attach({
      ...handler,
      onClose: (w: Wire) => {
        handler.onClose(w)
        this.lost(w)
      },
      // The head's referral names the nodes a piece it turned down went to instead: each dialed,
      // unless the node says not now (node.ts). Another peer's is plain peer exchange: a node
      // cannot make the others dial all it names.
      ...(this.opts.learnPeers
        ? {
            onPex: (w: Wire, addresses: string[], referral: boolean) => referral && isHeadPeerId(w.peerId) && (this.opts.dialReferrals?.() ?? true)
              ? addresses.forEach((a) => this.dial(a))
              : this.dialSome(addresses)
          }
        : {}),
      ...(description ? { onDesc: (w: Wire, msg: DescMessage) => description.onDesc(w, msg) } : {})
    })
    wire.pex(this.listenAddresses(wire))
    return true
  }

  /** Where up to PEX_PEERS other connected peers listen: their address and the port their extension handshake gave. */
  private listenAddresses (except: Wire): string[] {
    const out: string[] = []
    for (const w of this.wires.values()) {
      if (out.length >= PEX_PEERS) break
      const address = w.listenAddress
      if (w !== except && address) out.push(address)
    }
    return out
  }

  /** A set-up connection ended: unless another replaced it, the address we reach its peer at is dialed again. */
  private lost (wire: Wire): void {
    if (this.wires.get(wire.peerId) !== wire) return
    this.wires.delete(wire.peerId)
    for (const dialed of this.dialed.values()) if (dialed.peerId === wire.peerId) this.redial(dialed)
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
