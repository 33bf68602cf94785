// The extension protocol (BEP 10) as p2prun's peers speak it: the extension handshake, which
// carries the job proof (see job-auth.ts), the port the peer listens on and the extensions it
// takes, peer exchange (BEP 11, ut_pex): the addresses of the peers one is connected to, so a
// node that knows one peer soon knows many, without asking the tracker again; and the description
// from peers, so the head does not send it to every node: BEP 9's messages (request, data,
// reject, in 16 KiB pieces) under the name p2prun_desc, for the whole description rather than
// the info dictionary alone, because the files' mtimes lie outside it (they may change without
// changing the infohash). The receiver checks the info dictionary against the infohash it was given.
import bencode from 'bencode'
import { decodeCompact, encodeCompact } from './peer-address.ts'

/** The id our peers send ut_pex messages to us under (ours to choose, announced in our handshake). */
export const UT_PEX_ID = 1
/** The id our peers send p2prun_desc messages to us under. */
export const DESC_ID = 2
/** As in BEP 9: the description moves in pieces of 16 KiB (the last one shorter). */
export const DESC_PIECE = 16 * 1024
/** The largest description p2prun takes from a peer: one of ~100,000 files. */
export const MAX_DESC_SIZE = 64 * 1024 * 1024

export interface ExtensionHandshake {
  readonly auth?: Uint8Array
  /** The id the peer wants its ut_pex messages sent under; undefined: it takes none. */
  readonly pexId?: number
  /** The port the peer listens on: what to tell others, since its connection's port may be ephemeral. */
  readonly listenPort?: number
  /** The id the peer takes p2prun_desc messages under; undefined: none. */
  readonly descId?: number
  /** The size of the description the peer can send; undefined: it has none. */
  readonly descSize?: number
}

/** The payload of our extension handshake (message 20, extended id 0); `descSize` if we can send the description. */
export function encodeExtensionHandshake (auth: Uint8Array, listenPort: number, descSize?: number): Buffer {
  const dict = { m: { p2prun_desc: DESC_ID, ut_pex: UT_PEX_ID }, p: listenPort, p2prun_auth: auth, ...(descSize ? { p2prun_desc_size: descSize } : {}) }
  return Buffer.concat([Buffer.from([0]), Buffer.from(bencode.encode(dict))])
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
  const id = (v: unknown) => (typeof v === 'number' && v > 0 && v < 256 ? v : undefined)
  const port = dict.p
  const size = dict.p2prun_desc_size
  return {
    auth: dict.p2prun_auth instanceof Uint8Array ? dict.p2prun_auth : undefined,
    pexId: id(m?.ut_pex),
    listenPort: typeof port === 'number' && Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined,
    descId: id(m?.p2prun_desc),
    descSize: typeof size === 'number' && Number.isInteger(size) && size > 0 && size <= MAX_DESC_SIZE ? size : undefined
  }
}

/** BEP 9's three messages: a request for a piece, the piece (with the whole size), or a refusal. */
export type DescMessage =
  | { readonly type: 'request', readonly piece: number }
  | { readonly type: 'data', readonly piece: number, readonly totalSize: number, readonly data: Buffer }
  | { readonly type: 'reject', readonly piece: number }

const DESC_TYPES = ['request', 'data', 'reject'] as const

/** A p2prun_desc payload (after message id 20) for a peer that takes them under `descId`. */
export function encodeDescMessage (descId: number, msg: DescMessage): Buffer {
  const dict = { msg_type: DESC_TYPES.indexOf(msg.type), piece: msg.piece, ...(msg.type === 'data' ? { total_size: msg.totalSize } : {}) }
  return Buffer.concat([Buffer.from([descId]), Buffer.from(bencode.encode(dict)), ...(msg.type === 'data' ? [msg.data] : [])])
}

/**
 * A p2prun_desc message (bencode after its extended id, then a data piece's bytes); undefined if
 * malformed. The dictionary holds integers only, so it ends at the first "ee": no decoder has to
 * guess where the piece's bytes begin.
 */
export function decodeDescMessage (payload: Buffer): DescMessage | undefined {
  const end = payload.indexOf('ee', 1, 'latin1')
  if (end < 0) return undefined
  let dict: Record<string, unknown>
  try {
    dict = bencode.decode(payload.subarray(1, end + 2)) as Record<string, unknown>
  } catch {
    return undefined
  }
  const piece = dict.piece
  const type = DESC_TYPES[dict.msg_type as number]
  if (typeof piece !== 'number' || !Number.isInteger(piece) || piece < 0 || type === undefined) return undefined
  if (type !== 'data') return { type, piece }
  const totalSize = dict.total_size
  if (typeof totalSize !== 'number' || !Number.isInteger(totalSize) || totalSize <= 0 || totalSize > MAX_DESC_SIZE) return undefined
  return { type, piece, totalSize, data: payload.subarray(end + 2) }
}

/**
 * A ut_pex payload (after message id 20) for a peer that takes them under `pexId`: IPv4 host:port
 * only. A `referral` (p2prun's own key, which other clients ignore) names the peers a piece the
 * sender turned down went to instead (seeder.ts refer): dialed whatever the receiver's numwant.
 */
export function encodePex (pexId: number, addresses: readonly string[], referral = false): Buffer {
  return Buffer.concat([Buffer.from([pexId]), Buffer.from(bencode.encode({ added: encodeCompact(addresses), ...(referral ? { p2prun_referral: 1 } : {}) }))])
}

/** What a ut_pex message says (bencode after its extended id); malformed input adds none. */
export interface Pex {
  readonly added: string[]
  readonly referral: boolean
}

export function decodePex (payload: Buffer): Pex {
  let dict: Record<string, unknown>
  try {
    dict = bencode.decode(payload.subarray(1)) as Record<string, unknown>
  } catch {
    return { added: [], referral: false }
  }
  return { added: dict?.added instanceof Uint8Array ? decodeCompact(dict.added) : [], referral: dict?.p2prun_referral === 1 }
}
