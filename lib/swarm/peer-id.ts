// Peer ids (BEP 20, Azureus style): the prefix tells the head's seeder from nodes, so byte counters
// can say how much of the set came from the head, and the tracker can tell node completions apart;
// and it tells p2prun's own peers from other clients, which get only standard requests.
import { randomBytes } from 'node:crypto'

export type Role = 'head' | 'node'

const PREFIX: Record<Role, string> = { head: '-P2H020-', node: '-P2N020-' }
const HEAD_PREFIX_HEX = Buffer.from(PREFIX.head).toString('hex')
const NODE_PREFIX_HEX = Buffer.from(PREFIX.node).toString('hex')

/** 20 bytes: the role prefix and 12 random characters. */
export function newPeerId (role: Role): Buffer {
  return Buffer.from(PREFIX[role] + randomBytes(6).toString('hex'))
}

export function isHeadPeerId (hexPeerId: string | undefined): boolean {
  return hexPeerId?.startsWith(HEAD_PREFIX_HEX) ?? false
}

/** Whether the peer is this p2prun (head or node), which serves requests of up to MAX_REQUEST_LENGTH. */
export function isP2prunPeerId (hexPeerId: string): boolean {
  return hexPeerId.startsWith(HEAD_PREFIX_HEX) || hexPeerId.startsWith(NODE_PREFIX_HEX)
}
