// Raw BitTorrent bytes for tests that play a peer by hand: length-prefixed messages, the handshake
// (with or without the Fast Extension and the extension protocol), and the percent-encoding of a
// tracker query's binary values; and the sockets to feed such bytes to a Wire on.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import type { Test } from 'tap'

export const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b }

export const message = (id: number, payload: Buffer = Buffer.alloc(0)) => Buffer.concat([u32(1 + payload.length), Buffer.from([id]), payload])

/** A peer id of no p2prun role (another client's, as far as p2prun can tell). */
export const strangerId = () => Buffer.from(`-XX0001-${randomBytes(6).toString('hex')}`)

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
