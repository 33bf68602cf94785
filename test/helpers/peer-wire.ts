// Raw BitTorrent bytes for tests that play a peer by hand: length-prefixed messages, the handshake
// (with or without the Fast Extension and the extension protocol), and the percent-encoding of a
// tracker query's binary values.
import { randomBytes } from 'node:crypto'

export const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b }

export const message = (id: number, payload: Buffer = Buffer.alloc(0)) => Buffer.concat([u32(1 + payload.length), Buffer.from([id]), payload])

/** A peer id of no p2prun role (another client's, as far as p2prun can tell). */
export const strangerId = () => Buffer.from(`-XX0001-${randomBytes(6).toString('hex')}`)

export function handshake (infoHash: Buffer, opts: { fast?: boolean, extensions?: boolean, peerId?: Buffer } = {}): Buffer {
  const reserved = Buffer.from([0, 0, 0, 0, 0, opts.extensions ? 0x10 : 0, 0, opts.fast ?? true ? 0x04 : 0])
  return Buffer.concat([Buffer.from('\x13BitTorrent protocol', 'latin1'), reserved, infoHash, opts.peerId ?? strangerId()])
}

export const pct = (bytes: Uint8Array) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')
