// The description file: a standard BitTorrent v1 .torrent whose info dictionary also carries the
// p2prun tree (key "p2prun"). Because the tree is inside the info dictionary, the infohash
// authenticates modes, sizes, symlinks and per-file SHA-256: a node handed only the infohash by the
// launcher can check a description it got from anywhere. What may change per launch (trackers,
// seeders, mtimes) lives outside the info dictionary, so it does not change the infohash.
import { createHash } from 'node:crypto'
import path from 'node:path'
import bencode from 'bencode'
import { descriptionError, quote } from './errors.ts'
import { hostPort } from './swarm/peer-address.ts'
import { symlinkEscape, type EntryType, type TreeEntry } from './tree.ts'

export const FORMAT_VERSION = 1
export const DEFAULT_MOUNT_POINT = '/tmp/p2prun/%i'

/** A scanned entry, plus what describing it adds. */
export interface DescribedEntry extends TreeEntry {
  /** Hex SHA-256 of the content, for regular files. */
  readonly sha256?: string
  /** Index in the torrent's file list and byte offset in the torrent, for non-empty regular files. */
  readonly torrentFile?: number
  readonly torrentOffset?: number
}

export interface Description {
  readonly infoHash: string
  readonly name: string
  readonly pieceLength: number
  readonly pieceCount: number
  /** Sum of the regular files' sizes: the bytes the swarm moves. */
  readonly totalBytes: number
  /** The torrent's SHA-1 of every piece, 20 bytes each. */
  readonly pieceHashes: Buffer
  readonly entries: readonly DescribedEntry[]
  /** Mount point template: %i is replaced by the infohash's first 16 hex digits, %n by the node name. */
  readonly mountPoint: string
  readonly trackers: readonly string[]
  /** host:port of seeders nodes may connect to directly. */
  readonly seeders: readonly string[]
  /** host:port (UDP) of DHT nodes to bootstrap from (BEP 5's `nodes`): set, nodes find peers there, not at trackers. */
  readonly dhtNodes: readonly string[]
  /** The whole .torrent, as handed to the BitTorrent client. */
  readonly torrent: Buffer
}

/** What describe.ts hands over to be encoded. */
export interface DescriptionParts {
  readonly entries: readonly DescribedEntry[]
  readonly mountPoint: string
  readonly trackers: readonly string[]
  readonly seeders: readonly string[]
}

/**
 * The permission bits a node gives a described file or directory (the mount, and `fetch`'s copy):
 * set-uid, set-gid and sticky bits from a description are never honoured, or a `fetch` run as root
 * would make set-uid programs of whatever a description says.
 */
export function nodePermissions (mode: number): number {
  return mode & 0o777
}

type Dict = Record<string, unknown>
const TYPE_CODES: Record<EntryType, string> = { dir: 'd', file: 'f', symlink: 'l' }
const CODE_TYPES: Record<string, EntryType> = { d: 'dir', f: 'file', l: 'symlink' }

/**
 * Adds the p2prun keys to a torrent made by create-torrent (which knows nothing of them) and
 * returns the final .torrent bytes.
 */
export function addP2prunKeys (torrentBytes: Uint8Array, parts: DescriptionParts): Buffer {
  const torrent = bencode.decode(torrentBytes) as Dict
  const info = torrent.info as Dict
  info.p2prun = {
    v: FORMAT_VERSION,
    mount: parts.mountPoint,
    entries: parts.entries.map((e) => {
      const out: Dict = { p: e.path, t: TYPE_CODES[e.type], m: e.mode }
      if (e.type === 'file') { out.s = e.size; out.h = Buffer.from(e.sha256 ?? '', 'hex') }
      if (e.type === 'symlink') out.l = e.target
      return out
    })
  }
  torrent.p2prun = {
    infohash: infoHashOf(info),
    mtimes: parts.entries.map((e) => e.mtimeMs),
    seeders: [...parts.seeders]
  }
  return Buffer.from(bencode.encode(withTrackers(torrent, parts.trackers)))
}

/** A copy of the description with other trackers/seeders/DHT nodes; the infohash stays the same. */
export function withLaunchInfo (desc: Description, launch: { trackers?: readonly string[], seeders?: readonly string[], dhtNodes?: readonly string[] }): Description {
  const torrent = bencode.decode(desc.torrent) as Dict
  const outer = torrent.p2prun as Dict
  if (launch.seeders) outer.seeders = [...launch.seeders]
  if (launch.dhtNodes) torrent.nodes = launch.dhtNodes.flatMap((a) => { const n = hostPort(a); return n ? [[n.host, n.port]] : [] })
  const bytes = Buffer.from(bencode.encode(launch.trackers ? withTrackers(torrent, launch.trackers) : torrent))
  return parseDescription(bytes, { expectInfoHash: desc.infoHash })
}

/**
 * The description as peers hand it to each other (swarm/description-exchange.ts): without the
 * launch's trackers, seeders and DHT nodes, which every node takes from its job spec, not from a peer.
 * Cut from the bytes, not decoded and encoded again: every node agent makes it as it starts (a
 * decode and an encode of a 47 KB description cost it ~6 ms of CPU, with cold code).
 */
export function peerShareable (desc: Description): Buffer {
  const bytes = desc.torrent
  const cuts: [number, number][] = []
  for (const entry of dictEntries(bytes, 0)) {
    if (entry.key === 'announce' || entry.key === 'announce-list' || entry.key === 'nodes') cuts.push([entry.start, entry.end])
    if (entry.key === 'p2prun' && bytes[entry.valueStart] === D) {
      for (const inner of dictEntries(bytes, entry.valueStart)) if (inner.key === 'seeders') cuts.push([inner.start, inner.end])
    }
  }
  if (cuts.length === 0) return bytes
  const kept: Buffer[] = []
  let at = 0
  for (const [start, end] of cuts) { kept.push(bytes.subarray(at, start)); at = end }
  kept.push(bytes.subarray(at))
  return Buffer.concat(kept)
}

// Where the values of bencoded bytes lie, for the two uses above and below that need a value's
// bytes as they are (the info dictionary's, whose SHA-1 is the infohash) or the bytes without
// some entries. Only for bytes `bencode.decode` accepted: they are well formed.
const D = 0x64 // 'd'
const L = 0x6c // 'l'
const I = 0x69 // 'i'
const E = 0x65 // 'e'
const COLON = 0x3a
const ZERO = 0x30

interface DictEntry {
  readonly key: string
  /** Where the entry's key starts, its value starts, and the value ends. */
  readonly start: number
  readonly valueStart: number
  readonly end: number
}

/** The entries of the dictionary that starts at `at`. */
function dictEntries (bytes: Uint8Array, at: number): DictEntry[] {
  if (bytes[at] !== D) throw new Error('not a dictionary')
  const entries: DictEntry[] = []
  let i = at + 1
  while (bytes[i] !== E) {
    if (i >= bytes.length) throw new Error('truncated')
    const [keyStart, valueStart] = stringAt(bytes, i)
    entries.push({ key: Buffer.from(bytes.buffer, bytes.byteOffset + keyStart, valueStart - keyStart).toString('latin1'), start: i, valueStart, end: (i = valueEnd(bytes, valueStart)) })
  }
  return entries
}

/** Where the value that starts at `at` ends (iteratively: a peer's description may nest deeply). */
function valueEnd (bytes: Uint8Array, at: number): number {
  let depth = 0
  let i = at
  do {
    const c = bytes[i]
    if (c === L || c === D) {
      depth++
      i++
    } else if (c === E && depth > 0) {
      depth--
      i++
    } else if (c === I) {
      i = after(bytes, E, i)
    } else {
      i = stringAt(bytes, i)[1]
    }
    if (i > bytes.length) throw new Error('truncated')
  } while (depth > 0)
  return i
}

/**
 * The string that starts at `at` (its length in decimal, a colon, its bytes): where its bytes start
 * and end. The digits are read as numbers, not through a string: an agent's start walks the ~3,000
 * strings of a 200-library description twice (infoHashIn, peerShareable) in cold code.
 */
function stringAt (bytes: Uint8Array, at: number): [number, number] {
  let length = 0
  let i = at
  for (let c = bytes[i]; c !== undefined && c >= ZERO && c <= ZERO + 9; c = bytes[++i]) length = length * 10 + c - ZERO
  if (i === at || bytes[i] !== COLON) throw new Error(`no value at byte ${at}`)
  return [i + 1, i + 1 + length]
}

/** Just past the next `byte` from `at`. */
function after (bytes: Uint8Array, byte: number, at: number): number {
  const found = bytes.indexOf(byte, at)
  if (found < 0) throw new Error('truncated')
  return found + 1
}

function withTrackers (torrent: Dict, trackers: readonly string[]): Dict {
  delete torrent.announce
  delete torrent['announce-list']
  if (trackers.length > 0) {
    torrent.announce = trackers[0]
    torrent['announce-list'] = trackers.map((t) => [t])
  }
  return torrent
}

function infoHashOf (info: Dict): string {
  return createHash('sha1').update(bencode.encode(info)).digest('hex')
}

/** The infohash of a torrent's bytes as they are (BEP 3): the SHA-1 of its info dictionary's bytes. */
function infoHashIn (bytes: Uint8Array): string {
  const info = dictEntries(bytes, 0).find((e) => e.key === 'info') as DictEntry
  return createHash('sha1').update(bytes.subarray(info.valueStart, info.end)).digest('hex')
}

export interface ParseOptions {
  /** Where the bytes came from, for messages. */
  readonly source?: string
  /** The infohash the launcher vouches for: anything else is refused. */
  readonly expectInfoHash?: string
}

/** Parses and fully validates a description; every defect is a DescriptionError naming it. */
export function parseDescription (bytes: Uint8Array, options: ParseOptions = {}): Description {
  const where = options.source ?? 'the description'
  const fail = (what: string, hint = 'make it again with `p2prun describe DIR -o FILE`') =>
    descriptionError(`${where} ${what}`, hint)

  let torrent: Dict
  try {
    torrent = bencode.decode(bytes) as Dict
  } catch (err) {
    throw descriptionError(`${where} is not a torrent file (truncated or corrupt: ${(err as Error).message})`,
      'make it again with `p2prun describe DIR -o FILE`', err)
  }
  if (!isDict(torrent) || !isDict(torrent.info)) throw fail('is not a torrent file (no info dictionary)')
  const info = torrent.info
  if (!isDict(info.p2prun)) throw fail('is a torrent but not a p2prun description (no p2prun metadata)')
  const meta = info.p2prun
  if (meta.v !== FORMAT_VERSION) {
    throw fail(`has format version ${String(meta.v)}; this p2prun reads version ${FORMAT_VERSION}`,
      'describe the directory again with this p2prun version')
  }
  const infoHash = infoHashIn(bytes)
  const outer = isDict(torrent.p2prun) ? torrent.p2prun : {}
  if (outer.infohash !== undefined && text(outer.infohash) !== infoHash) {
    throw fail('is corrupt or was edited: its info dictionary no longer matches the infohash it was written with')
  }
  if (options.expectInfoHash && options.expectInfoHash.toLowerCase() !== infoHash) {
    throw descriptionError(`${where} has infohash ${infoHash}, not the expected ${options.expectInfoHash}`,
      'the description was replaced or tampered with: fetch it again from the head node')
  }

  const name = text(info.name)
  const pieceLength = info['piece length']
  if (typeof pieceLength !== 'number' || pieceLength < 16384 || (pieceLength & (pieceLength - 1)) !== 0) {
    throw fail(`has an invalid piece length ${String(pieceLength)}`)
  }
  const torrentFiles = listTorrentFiles(info, name, fail)
  const totalBytes = torrentFiles.reduce((sum, f) => sum + f.length, 0)
  const pieces = info.pieces
  const pieceCount = Math.ceil(totalBytes / pieceLength)
  if (!(pieces instanceof Uint8Array) || pieces.length !== 20 * pieceCount) {
    throw fail(`has ${pieces instanceof Uint8Array ? pieces.length / 20 : 0} piece hashes for ${pieceCount} pieces`)
  }
  const mtimes = Array.isArray(outer.mtimes) ? outer.mtimes : []
  const entries = parseEntries(meta.entries, torrentFiles, mtimes, fail)
  return Object.freeze({
    infoHash,
    name,
    pieceLength,
    pieceCount,
    totalBytes,
    pieceHashes: Buffer.from(pieces),
    entries,
    mountPoint: typeof meta.mount === 'string' || meta.mount instanceof Uint8Array ? text(meta.mount) : DEFAULT_MOUNT_POINT,
    trackers: trackersOf(torrent),
    seeders: Array.isArray(outer.seeders) ? outer.seeders.map(text) : [],
    dhtNodes: dhtNodesOf(torrent),
    torrent: Buffer.from(bytes)
  })
}

interface TorrentFile { readonly path: string, readonly length: number }

function listTorrentFiles (info: Dict, name: string, fail: (what: string) => Error): TorrentFile[] {
  if (typeof info.length === 'number') return [{ path: name, length: info.length }]
  if (!Array.isArray(info.files) || info.files.length === 0) throw fail('lists no files')
  return info.files.map((f: unknown) => {
    if (!isDict(f) || typeof f.length !== 'number' || f.length < 0 || !Array.isArray(f.path)) {
      throw fail('has a malformed file list')
    }
    return { path: f.path.map(text).join('/'), length: f.length }
  })
}

function parseEntries (raw: unknown, torrentFiles: TorrentFile[], mtimes: unknown[],
  fail: (what: string, hint?: string) => Error): DescribedEntry[] {
  if (!Array.isArray(raw) || raw.length === 0) throw fail('has no tree entries')
  const types = new Map<string, EntryType>()
  let offset = 0
  let fileIndex = 0
  const singleFile = torrentFiles.length === 1
  const entries = raw.map((item: unknown, i: number): DescribedEntry => {
    if (!isDict(item)) throw fail(`has a malformed tree entry #${i}`)
    const p = text(item.p)
    const type = CODE_TYPES[text(item.t)]
    const mode = item.m
    if (type === undefined || typeof mode !== 'number' || mode < 0 || mode > 0o7777) throw fail(`has a malformed entry for ${quote(p)}`)
    if (i === 0 ? p !== '' || type !== 'dir' : !validPath(p)) throw fail(`has an invalid path ${quote(p)}`)
    if (i > 0) {
      const prev = text((raw[i - 1] as Dict).p)
      if (!(prev < p)) throw fail(`has tree entries out of order at ${quote(p)}`)
      const parent = path.posix.dirname(p)
      if (types.get(parent === '.' ? '' : parent) !== 'dir') throw fail(`has ${quote(p)} without its parent directory`)
    }
    types.set(p, type)
    const mtimeMs = typeof mtimes[i] === 'number' ? mtimes[i] : 0
    if (type === 'dir') return { path: p, type, mode, size: 0, mtimeMs }
    if (type === 'symlink') {
      const target = text(item.l)
      if (target === '') throw fail(`has symlink ${quote(p)} without a target`)
      const escape = symlinkEscape(p, target)
      if (escape !== undefined) {
        throw fail(`has symlink ${quote(p)} -> ${quote(target)} that can point outside the set: its target ${escape}`,
          '`p2prun describe` never writes such a link, so this description was made or edited by hand: ' +
          'describe the directory again (--follow-symlinks copies such targets in)')
      }
      return { path: p, type, mode, size: 0, mtimeMs, target }
    }
    const size = item.s
    const hash = item.h
    if (typeof size !== 'number' || size < 0 || !(hash instanceof Uint8Array) || hash.length !== 32) {
      throw fail(`has a malformed file entry ${quote(p)}`)
    }
    const entry: DescribedEntry = { path: p, type, mode, size, mtimeMs, sha256: Buffer.from(hash).toString('hex') }
    if (size === 0) return entry
    const tf = torrentFiles[fileIndex]
    if (!tf || tf.length !== size || (!singleFile && tf.path !== p)) {
      throw fail(`does not match its own torrent file list at ${quote(p)}`)
    }
    const placed = { ...entry, torrentFile: fileIndex, torrentOffset: offset }
    fileIndex++
    offset += size
    return placed
  })
  if (fileIndex !== torrentFiles.length) throw fail('lists torrent files that are not in its tree')
  return entries
}

function validPath (p: string): boolean {
  if (p === '' || p.includes('\0')) return false
  return p.split('/').every((part) => part !== '' && part !== '.' && part !== '..')
}

function trackersOf (torrent: Dict): string[] {
  const list = Array.isArray(torrent['announce-list'])
    ? torrent['announce-list'].flat().map(text)
    : torrent.announce !== undefined ? [text(torrent.announce)] : []
  return [...new Set(list)]
}

/** BEP 5's `nodes`: a list of [host, port]; malformed entries are left out. */
function dhtNodesOf (torrent: Dict): string[] {
  if (!Array.isArray(torrent.nodes)) return []
  return torrent.nodes.flatMap((n: unknown) => Array.isArray(n) && typeof n[1] === 'number' && text(n[0]) !== '' ? [`${text(n[0])}:${n[1]}`] : [])
}

function isDict (v: unknown): v is Dict {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array)
}

function text (v: unknown): string {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8')
  return typeof v === 'string' ? v : ''
}

export interface DescriptionSummary {
  readonly files: number
  readonly dirs: number
  readonly symlinks: number
  readonly bytes: number
  readonly pieces: number
  readonly pieceLength: number
}

export function summarize (desc: Description): DescriptionSummary {
  const count = (t: EntryType) => desc.entries.filter((e) => e.type === t).length
  return {
    files: count('file'),
    dirs: count('dir') - 1, // the root is not counted
    symlinks: count('symlink'),
    bytes: desc.totalBytes,
    pieces: desc.pieceCount,
    pieceLength: desc.pieceLength
  }
}

export function formatSummary (s: DescriptionSummary): string {
  return `${s.files} files, ${s.dirs} directories, ${s.symlinks} symlinks, ${formatBytes(s.bytes)} ` +
    `in ${s.pieces} pieces of ${formatBytes(s.pieceLength)}`
}

export function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`
}
