// Raw BitTorrent bytes for tests that play a peer by hand: length-prefixed messages, the handshake
// (with or without the Fast Extension and the extension protocol), and the percent-encoding of a
// tracker query's binary values; the sockets to feed such bytes to a Wire on; and peers played by
// hand against an agent or a head: hostile bytes, a liar.
import { createHmac, randomBytes } from 'node:crypto'
import net from 'node:net'
import type { Test } from 'tap'
import { hostPort } from '../../lib/swarm/peer-address.ts'

export const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b }

export const message = (id: number, payload: Buffer = Buffer.alloc(0)) => Buffer.concat([u32(1 + payload.length), Buffer.from([id]), payload])

/** A peer id of no p2prun role (another client's, as far as p2prun can tell). */
export const strangerId = () => Buffer.from(`-XX0001-${randomBytes(6).toString('hex')}`)

/** The job proof a peer `from` gives peer `to` in its extension handshake (lib/swarm/job-auth.ts's, purpose "peer"). */
export function peerProof (secret: string, infoHash: Uint8Array, from: Uint8Array, to: Uint8Array): Buffer {
  return createHmac('sha256', Buffer.from(secret, 'hex')).update('peer').update(infoHash).update(from).update(to).digest()
}

export function handshake (infoHash: Buffer, opts: { fast?: boolean, extensions?: boolean, peerId?: Buffer } = {}): Buffer {
  const reserved = Buffer.from([0, 0, 0, 0, 0, opts.extensions ? 0x10 : 0, 0, opts.fast ?? true ? 0x04 : 0])
  return Buffer.concat([Buffer.from('\x13BitTorrent protocol', 'latin1'), reserved, infoHash, opts.peerId ?? strangerId()])
}

/**
 * Reads what arrives on a hand-played peer's socket: the other end's 68-byte handshake
 * (`onHandshake`), then each message's body, its id first (keep-alives skipped).
 */
export function readPeer (socket: net.Socket, onMessage: (msg: Buffer) => void, onHandshake?: () => void): void {
  let buffered = Buffer.alloc(0)
  let shook = false
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk])
    if (!shook) {
      if (buffered.length < 68) return
      shook = true
      buffered = buffered.subarray(68)
      onHandshake?.()
    }
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
      const msg = buffered.subarray(4, 4 + buffered.readUInt32BE(0))
      buffered = buffered.subarray(4 + msg.length)
      if (msg.length > 0) onMessage(msg)
    }
  })
}

export const pct = (bytes: Uint8Array) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')

/** Accepted ends of loopback connections to one server, all destroyed at the end of the test. */
export async function acceptedSockets (t: Test) {
  const server = net.createServer()
  const open: net.Socket[] = []
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  t.teardown(() => { for (const s of open) s.destroy(); server.close() })
  return async (): Promise<net.Socket> => {
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
    const dialed = net.connect(port, '127.0.0.1')
    dialed.on('error', () => {}) // the wire under test may reset it
    const socket = await accepted
    open.push(dialed, socket)
    return socket
  }
}

/** The port of a host:port address. */
export const portOf = (address: string) => (hostPort(address) as { port: number }).port

/** A connection to host:port. */
export const connectTo = (address: string, onConnect: () => void) => net.connect(hostPort(address) as { host: string, port: number }, onConnect)

/**
 * Connects to host:port, sends `bytes` (then ends its side if `end`), and resolves once the
 * connection is closed: without `end`, only the other end can have closed it.
 */
export function sendAndAwaitClose (address: string, bytes: Buffer, end = false): Promise<Buffer> {
  return new Promise((resolve) => {
    const got: Buffer[] = []
    const socket = connectTo(address, () => {
      if (end) socket.end(bytes)
      else socket.write(bytes)
    })
    socket.on('data', (chunk: Buffer) => got.push(chunk))
    socket.on('error', () => {}) // a reset is a close too
    socket.on('close', () => resolve(Buffer.concat(got)))
  })
}

/** Whether a peer at host:port answers our handshake with its own for the same torrent. */
export function answersHandshake (address: string, infoHash: Buffer, opts: Parameters<typeof handshake>[1] = {}): Promise<boolean> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0)
    const socket = connectTo(address, () => socket.write(handshake(infoHash, opts)))
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      if (got.length >= 68) { socket.destroy(); resolve(got.subarray(28, 48).equals(infoHash)) }
    })
    socket.on('error', () => resolve(false))
    socket.on('close', () => resolve(false))
  })
}

/**
 * A peer that says it has every piece and, after the handshake, either sends `opening` (hostile
 * bytes) or answers every request with random bytes, or (`mute`) never answers. Counts its
 * connections, the requests it got, and the connections closed.
 */
export async function liar (t: Test, infoHash: Buffer, opening?: Buffer, mute = false) {
  const counts = { connections: 0, requests: 0, closed: 0 }
  const server = net.createServer((socket) => {
    counts.connections++
    socket.on('error', () => {})
    socket.on('close', () => { counts.closed++ })
    readPeer(socket, (msg) => {
      if (msg[0] !== 6 || msg.length !== 13) return
      counts.requests++
      if (!mute) socket.write(message(7, Buffer.concat([msg.subarray(1, 9), randomBytes(msg.readUInt32BE(9))])))
    }, () => socket.write(Buffer.concat([handshake(infoHash), message(0x0e), message(1), opening ?? Buffer.alloc(0)])))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return { port: (server.address() as net.AddressInfo).port, counts, server }
}
