// Scans a library directory into the flat, sorted entry list a description is built from.
// Only lstat/readdir/readlink here: file contents are read (and hashed) once, by description.ts.
import { lstat, readdir, readlink, realpath, stat } from 'node:fs/promises'
import { lstatSync, realpathSync, statSync, type Stats } from 'node:fs'
import path from 'node:path'
import { sourceError } from './errors.ts'

export type EntryType = 'dir' | 'file' | 'symlink'

export interface TreeEntry {
  /** Relative to the tree root, '/'-separated; '' is the root itself. */
  readonly path: string
  readonly type: EntryType
  /** Permission bits (mode & 0o7777). */
  readonly mode: number
  /** Bytes for files; 0 for directories and symlinks. */
  readonly size: number
  readonly mtimeMs: number
  /** Symlink target exactly as stored in the link. */
  readonly target?: string
}

export interface ScanOptions {
  /** Copy in the target of absolute symlinks and symlinks that leave the tree, instead of failing. */
  readonly followSymlinks?: boolean
}

/** Entries sorted by path (root first), so equal trees give equal lists on any machine. */
export async function scanTree (root: string, options: ScanOptions = {}): Promise<TreeEntry[]> {
  const rootStat = await stat(root).catch((err: NodeJS.ErrnoException) => {
    throw sourceError(`library directory ${root} ${err.code === 'ENOENT' ? 'does not exist' : `cannot be read: ${err.code}`}`,
      'pass the directory that holds the job\'s shared libraries', err)
  })
  if (!rootStat.isDirectory()) {
    throw sourceError(`${root} is not a directory`, 'pass the directory that holds the libraries, not a file in it')
  }
  const entries: TreeEntry[] = [toEntry('', rootStat)]
  await scanDir(root, '', new Set([await realpath(root)]), entries, options)
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

async function scanDir (absDir: string, relDir: string, ancestors: Set<string>, out: TreeEntry[],
  options: ScanOptions): Promise<void> {
  const names = await readdir(absDir, { encoding: 'buffer' }).catch((err: NodeJS.ErrnoException) => {
    throw sourceError(`cannot list ${absDir}: ${err.code}`, 'make the directory readable by the user running p2prun', err)
  })
  await Promise.all(names.map(async (raw) => {
    const name = raw.toString('utf8')
    const abs = path.join(absDir, name)
    if (!Buffer.from(name, 'utf8').equals(raw)) {
      throw sourceError(`${abs} has a name that is not valid UTF-8`, 'rename it: torrent paths are UTF-8')
    }
    const rel = relDir === '' ? name : `${relDir}/${name}`
    const st = await lstat(abs)
    if (st.isSymbolicLink()) {
      await addSymlink(abs, rel, ancestors, out, options)
    } else {
      await addNode(abs, rel, st, ancestors, out, options)
    }
  }))
}

async function addNode (abs: string, rel: string, st: Stats, ancestors: Set<string>, out: TreeEntry[],
  options: ScanOptions): Promise<void> {
  if (st.isDirectory()) {
    const real = await realpath(abs)
    if (ancestors.has(real)) {
      throw sourceError(`${abs} leads back into one of its own parent directories (symlink loop)`,
        'remove the looping symlink or describe without --follow-symlinks')
    }
    out.push(toEntry(rel, st))
    await scanDir(abs, rel, new Set([...ancestors, real]), out, options)
  } else if (st.isFile()) {
    out.push(toEntry(rel, st))
  } else {
    throw sourceError(`${abs} is a ${specialKind(st)}: only regular files, directories and symlinks can be shared`,
      'move it out of the library directory')
  }
}

async function addSymlink (abs: string, rel: string, ancestors: Set<string>, out: TreeEntry[],
  options: ScanOptions): Promise<void> {
  const target = await readlink(abs)
  const escape = symlinkEscape(rel, target)
  if (escape === undefined) {
    const st = await lstat(abs)
    out.push({ path: rel, type: 'symlink', mode: st.mode & 0o7777, size: 0, mtimeMs: Math.trunc(st.mtimeMs), target })
    return
  }
  if (!options.followSymlinks) {
    throw sourceError(`symlink ${abs} -> ${target} can point outside the library directory: its target ${escape}`,
      'make it relative and inside the tree, or pass --follow-symlinks (P2PRUN_FOLLOW_SYMLINKS=1 for sbatch --p2plibs) to copy its target in')
  }
  const st = await stat(abs).catch((err: NodeJS.ErrnoException) => {
    throw sourceError(`symlink ${abs} -> ${target} cannot be followed: ${err.code}`, 'fix or remove the dangling link', err)
  })
  await addNode(abs, rel, st, ancestors, out, options)
}

/**
 * Why the symlink at `linkPath` (in the tree, '/'-separated) could lead outside the tree, or
 * undefined if it cannot: `describe` copies such links in or refuses them, and the description
 * parser refuses them, so no node ever mounts or writes a link to /etc/passwd.
 * A lexical check is not enough: in `a/../x` the `a` may itself be a link (to the tree's top, say),
 * and the `..` then climbs from wherever it leads. So a target may only go up from the link's own
 * directory, whose ancestors are real directories, then down: every link met on the way down obeys
 * this same rule from where it stands, so the whole resolution stays inside.
 */
export function symlinkEscape (linkPath: string, target: string): string | undefined {
  if (path.posix.isAbsolute(target)) return 'is absolute'
  const dir = path.posix.dirname(linkPath)
  let levelsToTop = dir === '.' ? 0 : dir.split('/').length
  let descended = false
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue
    if (part !== '..') descended = true
    else if (descended) return 'goes up (..) after a name, which may itself be a symlink'
    else if (--levelsToTop < 0) return 'climbs above the top directory'
  }
  return undefined
}

function toEntry (rel: string, st: Stats): TreeEntry {
  return {
    path: rel,
    type: st.isDirectory() ? 'dir' : 'file',
    mode: st.mode & 0o7777,
    size: st.isDirectory() ? 0 : st.size,
    mtimeMs: Math.trunc(st.mtimeMs)
  }
}

function specialKind (st: Stats): string {
  if (st.isSocket()) return 'socket'
  if (st.isFIFO()) return 'FIFO'
  if (st.isBlockDevice()) return 'block device'
  if (st.isCharacterDevice()) return 'character device'
  return 'special file'
}

/**
 * Files from anywhere on this host as one tree, each at its absolute path (less the leading '/'), so
 * that the loader's own paths — DT_RPATH, $ORIGIN, an absolute dlopen — name the same file under
 * the mount. Directories come with their modes. A file reached by several paths is stored once and
 * the other paths are relative links to it. `trees` are scanned directories, placed the same way.
 */
export function mirrorTree (files: readonly string[], trees: readonly { readonly dir: string, readonly entries: readonly TreeEntry[] }[]): TreeEntry[] {
  // Synchronous: a few small calls per file, for which the thread pool's round trips cost more
  // than the calls; the launcher that builds this serves nothing yet.
  const out = new Map<string, TreeEntry>()
  const addParents = (rel: string) => {
    const parts = rel.split('/')
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/')
      if (!out.has(dir)) out.set(dir, toEntry(dir, statSync(`/${dir}`)))
    }
  }
  for (const { dir, entries } of trees) {
    const top = path.resolve(dir).slice(1)
    addParents(top)
    for (const e of entries) {
      const rel = e.path === '' ? top : `${top}/${e.path}`
      out.set(rel, { ...e, path: rel })
    }
  }
  const firstPathOf = new Map<string, string>()
  for (const file of [...new Set(files.map((f) => path.resolve(f)))].sort()) {
    const rel = file.slice(1)
    if (out.has(rel)) continue
    addParents(rel)
    const real = realpathSync(file)
    const first = firstPathOf.get(real)
    if (first === undefined) {
      firstPathOf.set(real, rel)
      out.set(rel, toEntry(rel, statSync(file)))
    } else {
      const st = lstatSync(file)
      out.set(rel, { path: rel, type: 'symlink', mode: 0o777, size: 0, mtimeMs: Math.trunc(st.mtimeMs), target: path.posix.relative(path.posix.dirname(rel), first) })
    }
  }
  const newest = [...out.values()].reduce((max, e) => Math.max(max, e.mtimeMs), 0)
  out.set('', { path: '', type: 'dir', mode: 0o755, size: 0, mtimeMs: newest })
  return [...out.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}
