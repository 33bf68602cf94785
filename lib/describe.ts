// Builds a description from a library directory: scan the tree, then read every file exactly once,
// feeding the same bytes to create-torrent (SHA-1 pieces) and to a per-file SHA-256.
import { createHash } from 'node:crypto'
import { open } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import createTorrent from 'create-torrent'
import { addP2prunKeys, DEFAULT_MOUNT_POINT, parseDescription, type DescribedEntry, type Description } from './description.ts'
import { sourceError } from './errors.ts'
import { mirrorTree, scanTree, type TreeEntry } from './tree.ts'
import { layoutOf, sourcePath, type SourceLayout } from './source-layout.ts'
import { VERSION } from './version.ts'

export interface DescribeOptions {
  readonly followSymlinks?: boolean
  readonly mountPoint?: string
  readonly trackers?: readonly string[]
  readonly seeders?: readonly string[]
  /** Torrent name; defaults to the directory's base name. It is part of the infohash. */
  readonly name?: string
}

const MIN_PIECE_LENGTH = 64 * 1024
const MAX_PIECE_LENGTH = 1024 * 1024
const TARGET_PIECES = 2048
const READ_CHUNK = 1024 * 1024

/**
 * The smallest power of two that keeps the set under ~2,048 pieces, within 64 KiB–1 MiB.
 * Small pieces are what block mode fetches per page fault and what a peer must complete before it
 * can re-share, so smaller is better until per-piece costs (SHA-1, have messages, the piece list in
 * the description) dominate — at 2,048 pieces that list is 40 KiB.
 */
export function choosePieceLength (totalBytes: number): number {
  let length = MIN_PIECE_LENGTH
  while (length < MAX_PIECE_LENGTH && length * TARGET_PIECES < totalBytes) length *= 2
  return length
}

export async function describeDirectory (dir: string, options: DescribeOptions = {}): Promise<Description> {
  return describeLayout(layoutOf([dir]), options)
}

export async function describeLayout (layout: SourceLayout, options: DescribeOptions = {}): Promise<Description> {
  return describeTree(layout, await scanLayout(layout, options), options)
}

/**
 * Files from anywhere on this host (a program's load closure) and whole directories, each at its
 * absolute path in the set (tree.ts's mirrorTree): the set's source is the root directory.
 */
export async function describeMirror (files: readonly string[], dirs: readonly { dir: string, followSymlinks?: boolean }[],
  options: DescribeOptions & { name: string }): Promise<{ desc: Description, layout: SourceLayout }> {
  const trees = await Promise.all(dirs.map(async ({ dir, followSymlinks }) => ({ dir, entries: await scanTree(dir, { followSymlinks }) })))
  return { desc: await describeTree(MIRROR_LAYOUT, mirrorTree(files, trees), options), layout: MIRROR_LAYOUT }
}

const MIRROR_LAYOUT: SourceLayout = { dirs: [{ name: '', dir: '/' }] }

async function describeTree (layout: SourceLayout, tree: readonly TreeEntry[], options: DescribeOptions): Promise<Description> {
  const payload = tree.filter((e) => e.type === 'file' && e.size > 0)
  const where = layout.dirs.map((d) => d.dir).join(', ')
  if (payload.length === 0) {
    throw sourceError(`${where} holds no non-empty files: there is nothing to share`,
      'point p2prun at the directory that holds the libraries')
  }
  const totalBytes = payload.reduce((sum, e) => sum + e.size, 0)
  const digests = new Map<string, string>()
  const name = options.name ?? layout.dirs.map((d) => d.name || path.basename(d.dir)).join('+')
  const streams = payload.map((e) => Object.assign(
    Readable.from(readAndHash(sourcePath(layout, e.path), e.size, (hex) => digests.set(e.path, hex)), { objectMode: false }),
    // create-torrent strips a prefix common to every path and uses it as the torrent name.
    { name: `${name}/${e.path}` }))

  const newest = tree.reduce((max, e) => Math.max(max, e.mtimeMs), 0)
  const raw = await new Promise<Uint8Array>((resolve, reject) => {
    createTorrent(streams, {
      name,
      pieceLength: choosePieceLength(totalBytes),
      private: true, // job-only swarm: clients must not use DHT or PEX for it
      announceList: [], // else create-torrent adds public trackers
      creationDate: new Date(newest || Date.now()), // outside the info dict; keeps the file reproducible too
      createdBy: `p2prun ${VERSION}`,
      filterJunkFiles: false // a library directory has no junk: keep every file
    }, (err, torrent) => { if (err) reject(err); else resolve(torrent) })
  })

  const entries = tree.map((e: TreeEntry): DescribedEntry =>
    e.type === 'file' ? { ...e, sha256: digests.get(e.path) ?? EMPTY_SHA256 } : e)
  const bytes = addP2prunKeys(raw, {
    entries,
    mountPoint: options.mountPoint ?? DEFAULT_MOUNT_POINT,
    trackers: options.trackers ?? [],
    seeders: options.seeders ?? []
  })
  const desc = parseDescription(bytes, { source: `the description of ${where}` })
  if (desc.totalBytes !== totalBytes) throw new Error('internal: described size differs from the scanned size')
  return desc
}

/** One directory's tree as is; several under a synthetic root, each as a top-level directory. */
async function scanLayout (layout: SourceLayout, options: DescribeOptions): Promise<TreeEntry[]> {
  const scans = await Promise.all(layout.dirs.map(async ({ name, dir }) => {
    const tree = await scanTree(dir, { followSymlinks: options.followSymlinks })
    return name === '' ? tree : tree.map((e) => ({ ...e, path: e.path === '' ? name : `${name}/${e.path}` }))
  }))
  if (layout.dirs.length === 1) return scans[0] ?? []
  const all = scans.flat()
  const newest = all.reduce((max, e) => Math.max(max, e.mtimeMs), 0)
  const root: TreeEntry = { path: '', type: 'dir', mode: 0o755, size: 0, mtimeMs: newest }
  return [root, ...all].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

const EMPTY_SHA256 = createHash('sha256').digest('hex')

async function * readAndHash (file: string, expectedSize: number, onDigest: (hex: string) => void): AsyncGenerator<Buffer> {
  const handle = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
    throw sourceError(`cannot read ${file}: ${err.code}`, 'make it readable by the user running p2prun', err)
  })
  const hash = createHash('sha256')
  let total = 0
  try {
    for (;;) {
      // Sized to what is left (plus one byte, to notice growth): most libraries are small.
      const want = Math.min(READ_CHUNK, Math.max(expectedSize - total, 0) + 1)
      const buf = Buffer.allocUnsafe(want)
      const { bytesRead } = await handle.read(buf, 0, want, null)
      if (bytesRead === 0) break
      total += bytesRead
      const chunk = buf.subarray(0, bytesRead)
      hash.update(chunk)
      yield chunk
    }
  } finally {
    await handle.close()
  }
  if (total !== expectedSize) {
    throw sourceError(`${file} changed while it was being described (${expectedSize} bytes, then ${total})`,
      'describe the libraries when nothing is writing to them')
  }
  onDigest(hash.digest('hex'))
}
