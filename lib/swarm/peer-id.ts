// Peer ids (BEP 20, Azureus style): the prefix tells the head's seeder from nodes, so byte counters
// can say how much of the set came from the head, and the tracker can tell node completions apart.
import { randomBytes } from 'node:crypto'

export type Role = 'head' | 'node'

const PREFIX: Record<Role, string> = { head: '-P2H010-', node: '-P2N010-' }
const HEAD_PREFIX_HEX = Buffer.from(PREFIX.head).toString('hex')

/** 20 bytes: the role prefix and 12 random characters. */
export function newPeerId (role: Role): Buffer {
  return Buffer.from(PREFIX[role] + randomBytes(6).toString('hex'))
}

export function isHeadPeerId (hexPeerId: string | undefined): boolean {
  return hexPeerId?.startsWith(HEAD_PREFIX_HEX) ?? false
}
