// Library-like trees for tests: deterministic content, symlink chains, odd names; descriptions
// edited the way someone building one by hand would.
import { createHash } from 'node:crypto'
import { lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import bencode from 'bencode'

/** Deterministic bytes (a SHA-256 counter stream): same seed, same content, on any machine. */
export function bytesFor (seed: string, size: number): Buffer {
  const out = Buffer.alloc(size)
  let block = 0
  for (let off = 0; off < size; off += 32, block++) {
    createHash('sha256').update(`${seed}:${block}`).digest().copy(out, off)
  }
  return out
}

export interface TreeSpec {
  readonly files?: Record<string, number | string>
  readonly symlinks?: Record<string, string>
  readonly dirs?: readonly string[]
  readonly modes?: Record<string, number>
}

/** A typical library directory: an soname symlink chain, a subdirectory, an empty file and dir, odd names. */
export const LIBRARY_TREE: TreeSpec = {
  files: {
    'libfoo.so.1.2.3': 300_000,
    'libbar.so.2.0': 150_001,
    'python/ext module é.so': 70_000,
    'python/__init__.py': '',
    'share/README': 'library set for tests\n'
  },
  symlinks: { 'libfoo.so.1': 'libfoo.so.1.2.3', 'libfoo.so': 'libfoo.so.1', 'libbar.so': 'libbar.so.2.0' },
  dirs: ['empty-dir'],
  modes: { 'libfoo.so.1.2.3': 0o755, 'libbar.so.2.0': 0o755 }
}

export async function makeTree (root: string, spec: TreeSpec): Promise<string> {
  await mkdir(root, { recursive: true })
  for (const d of spec.dirs ?? []) await mkdir(path.join(root, d), { recursive: true })
  for (const [rel, content] of Object.entries(spec.files ?? {})) {
    const file = path.join(root, rel)
    await mkdir(path.dirname(file), { recursive: true })
    await writeFile(file, typeof content === 'number' ? bytesFor(rel, content) : content, { mode: spec.modes?.[rel] ?? 0o644 })
  }
  for (const [rel, target] of Object.entries(spec.symlinks ?? {})) {
    await mkdir(path.dirname(path.join(root, rel)), { recursive: true })
    await symlink(target, path.join(root, rel))
  }
  return root
}

export interface Snapshot {
  [path: string]: string
}

/** type, permission bits (under `modeMask`) and content hash (or link target) of every entry below root. */
export async function snapshotTree (root: string, modeMask = 0o777): Promise<Snapshot> {
  const out: Snapshot = {}
  const walk = async (rel: string): Promise<void> => {
    const abs = path.join(root, rel)
    const st = await lstat(abs)
    const mode = (st.mode & modeMask).toString(8)
    if (st.isSymbolicLink()) {
      out[rel] = `link -> ${await readlink(abs)}`
    } else if (st.isDirectory()) {
      out[rel] = `dir ${mode}`
      for (const name of (await readdir(abs)).sort()) await walk(rel === '' ? name : `${rel}/${name}`)
    } else {
      out[rel] = `file ${mode} ${createHash('sha256').update(await readFile(abs)).digest('hex')}`
    }
  }
  await walk('')
  return out
}

type Dict = Record<string, unknown>

/**
 * A description with `links` (path -> target) added to its tree, made consistent as a forger
 * would make it: the tree is in the info dictionary, so the infohash it records is recomputed.
 */
export function withSymlinks (torrent: Uint8Array, links: Record<string, string>): Buffer {
  const decoded = bencode.decode(torrent) as Dict & { info: Dict & { p2prun: { entries: Dict[] } }, p2prun: Dict }
  const entries = decoded.info.p2prun.entries
  for (const [p, l] of Object.entries(links)) entries.push({ p, t: 'l', m: 0o777, l })
  const key = (e: Dict) => Buffer.from(e.p as Uint8Array | string).toString('utf8')
  entries.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
  delete decoded.p2prun.mtimes // one per entry: they would no longer line up
  decoded.p2prun.infohash = createHash('sha1').update(bencode.encode(decoded.info)).digest('hex')
  return Buffer.from(bencode.encode(decoded))
}
