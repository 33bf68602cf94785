// The extension protocol (BEP 10) as p2prun's peers speak it: the extension handshake, which
// carries the job proof (see job-auth.ts), the port the peer listens on and the extensions it
// takes, and peer exchange (BEP 11, ut_pex): the addresses of the peers one is connected to, so a
// node that knows one peer soon knows many, without asking the tracker again.
import bencode from 'bencode'
import { decodeCompact, encodeCompact } from './peer-address.ts'

/** The id our peers send ut_pex messages to us under (ours to choose, announced in our handshake). */
export const UT_PEX_ID = 1

export interface ExtensionHandshake {
  readonly auth?: Uint8Array
  /** The id the peer wants its ut_pex messages sent under; undefined: it takes none. */
  readonly pexId?: number
  /** The port the peer listens on: what to tell others, since its connection's port may be ephemeral. */
  readonly listenPort?: number
}

/** The payload of our extension handshake (message 20, extended id 0). */
export function encodeExtensionHandshake (auth: Uint8Array, listenPort: number): Buffer {
  return Buffer.concat([Buffer.from([0]), Buffer.from(bencode.encode({ m: { ut_pex: UT_PEX_ID }, p: listenPort, p2prun_auth: auth }))])
}

/** The peer's extension handshake, from the payload of a message 20; undefined if it is none. */
export function decodeExtensionHandshake (payload: Buffer): ExtensionHandshake | undefined {
  if (payload[0] !== 0) return undefined
  let dict: Record<string, unknown>
  try {
    dict = bencode.decode(payload.subarray(1)) as Record<string, unknown>
  } catch {
    return undefined
  }
  if (typeof dict !== 'object' || dict === null) return undefined
  const m = dict.m as Record<string, unknown> | undefined
  const pexId = typeof m?.ut_pex === 'number' && m.ut_pex > 0 && m.ut_pex < 256 ? m.ut_pex : undefined
  const port = dict.p
  return {
    auth: dict.p2prun_auth instanceof Uint8Array ? dict.p2prun_auth : undefined,
    pexId,
    listenPort: typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined
  }
}

/** A ut_pex payload (after message id 20) for a peer that takes them under `pexId`: IPv4 host:port only. */
export function encodePex (pexId: number, addresses: readonly string[]): Buffer {
  return Buffer.concat([Buffer.from([pexId]), Buffer.from(bencode.encode({ added: encodeCompact(addresses) }))])
}

/** The addresses a ut_pex message adds (bencode after its extended id); malformed input gives none. */
export function decodePex (payload: Buffer): string[] {
  let added: unknown
  try {
    added = (bencode.decode(payload.subarray(1)) as Record<string, unknown>).added
  } catch {
    return []
  }
  return added instanceof Uint8Array ? decodeCompact(added) : []
}
