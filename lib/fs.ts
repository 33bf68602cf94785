// The library file system as plain FUSE operations: an immutable inode table built once from the
// description answers every metadata call locally; only open (file/eager mode) and read ask the
// ByteSource, which may wait on the network. Nothing here knows BitTorrent or fuse-native.
import { constants as fsConstants } from 'node:fs'
import { constants } from 'node:os'
import path from 'node:path'
import type { DataMode } from './config.ts'
import { nodePermissions, type DescribedEntry, type Description } from './description.ts'
import type { ByteSource } from './store.ts'


export interface FsOptions {
  readonly mode: DataMode
  readonly uid: number
  readonly gid: number
  /** Told about every failed read (the FS answers EIO); the caller logs. */
  readonly onError: (op: string, file: string, err: unknown) => void
}

/** The paper's Section IV-A numbers: how often each operation reached the FUSE process. */
export interface FsStats {
  ops: Record<OpName, number>
  /** getattr calls answered ENOENT: the loader's failed LD_LIBRARY_PATH lookups. */
  enoent: number
  bytesServedLocal: number
  bytesServedAfterFetch: number
  readErrors: number
  /** ms from mount until every file opened so far was complete (file/eager mode), or null. */
  openedCompleteMs: number | null
}

type OpName = 'getattr' | 'readdir' | 'readlink' | 'open' | 'read' | 'release' | 'statfs' | 'access' | 'refused'
type Cb<T = void> = (err: number, value?: T) => void

// fuse-native answers with negated errno values.
const E = Object.fromEntries(Object.entries(constants.errno).map(([k, v]) => [k, -v])) as Record<keyof typeof constants.errno, number>
const S_IFDIR = 0o040000
const S_IFREG = 0o100000
const S_IFLNK = 0o120000
// Nothing here can be written: of the permission bits, read and execute are kept.
const READ_EXECUTE_BITS = 0o555

interface Inode {
  readonly entry: DescribedEntry
  readonly stat: Record<string, number | Date>
  readonly children?: readonly string[]
}

export class LibraryFs {
  readonly stats: FsStats
  private readonly inodes = new Map<string, Inode>()
  private readonly source: ByteSource
  private readonly options: FsOptions
  private readonly mountedAt = performance.now()
  private readonly pendingFiles = new Set<string>()
  private readonly totalBlocks: number

  constructor (desc: Description, source: ByteSource, options: FsOptions) {
    this.source = source
    this.options = options
    this.stats = {
      ops: { getattr: 0, readdir: 0, readlink: 0, open: 0, read: 0, release: 0, statfs: 0, access: 0, refused: 0 },
      enoent: 0,
      bytesServedLocal: 0,
      bytesServedAfterFetch: 0,
      readErrors: 0,
      openedCompleteMs: null
    }
    this.totalBlocks = Math.ceil(desc.totalBytes / 4096)
    this.buildInodes(desc)
  }

  /** The operations object fuse-native mounts. Each answers through its callback, never throws. */
  operations (): Record<string, (...args: never[]) => void> {
    const refuse = (...args: unknown[]) => { this.stats.ops.refused++; (args[args.length - 1] as Cb)(E.EROFS) }
    return {
      init: (cb: Cb) => cb(0),
      getattr: (p: string, cb: Cb<object>) => this.getattr(p, cb),
      fgetattr: (p: string, _fd: number, cb: Cb<object>) => this.getattr(p, cb),
      readdir: (p: string, cb: Cb<string[]>) => this.readdir(p, cb),
      readlink: (p: string, cb: Cb<string>) => this.readlink(p, cb),
      access: (p: string, mode: number, cb: Cb) => this.access(p, mode, cb),
      statfs: (_p: string, cb: Cb<object>) => this.statfs(cb),
      open: (p: string, flags: number, cb: Cb<number>) => this.open(p, flags, cb),
      read: (p: string, _fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => this.read(p, buf, len, pos, cb),
      release: (_p: string, _fd: number, cb: Cb) => { this.stats.ops.release++; cb(0) },
      getxattr: (_p: string, _name: string, _pos: number, cb: (err: number, value: Buffer | null) => void) => cb(0, null),
      listxattr: (_p: string, cb: (err: number, list: string[]) => void) => cb(0, []),
      // Every way of changing the tree is refused. The mount is also "ro", so most never get here.
      write: refuse, create: refuse, truncate: refuse, ftruncate: refuse, unlink: refuse, rename: refuse,
      mkdir: refuse, rmdir: refuse, symlink: refuse, link: refuse, chmod: refuse, chown: refuse,
      utimens: refuse, mknod: refuse, setxattr: refuse, removexattr: refuse
    }
  }

  private getattr (p: string, cb: Cb<object>): void {
    this.stats.ops.getattr++
    const node = this.inodes.get(p)
    if (!node) { this.stats.enoent++; return cb(E.ENOENT) }
    cb(0, node.stat)
  }

  private readdir (p: string, cb: Cb<string[]>): void {
    this.stats.ops.readdir++
    const node = this.inodes.get(p)
    if (!node) return cb(E.ENOENT)
    if (!node.children) return cb(E.ENOTDIR)
    cb(0, ['.', '..', ...node.children])
  }

  private readlink (p: string, cb: Cb<string>): void {
    this.stats.ops.readlink++
    const node = this.inodes.get(p)
    if (!node) return cb(E.ENOENT)
    if (node.entry.type !== 'symlink') return cb(E.EINVAL)
    cb(0, node.entry.target)
  }

  private access (p: string, mode: number, cb: Cb): void {
    this.stats.ops.access++
    if (!this.inodes.has(p)) return cb(E.ENOENT)
    cb(mode & fsConstants.W_OK ? E.EROFS : 0)
  }

  private statfs (cb: Cb<object>): void {
    this.stats.ops.statfs++
    cb(0, {
      bsize: 4096, frsize: 4096, blocks: this.totalBlocks, bfree: 0, bavail: 0,
      files: this.inodes.size, ffree: 0, favail: 0, fsid: 0, flag: 1 /* ST_RDONLY */, namemax: 255
    })
  }

  private open (p: string, flags: number, cb: Cb<number>): void {
    this.stats.ops.open++
    const node = this.inodes.get(p)
    if (!node) return cb(E.ENOENT)
    if ((flags & 3) !== fsConstants.O_RDONLY || flags & fsConstants.O_TRUNC) return cb(E.EROFS)
    if (node.entry.type !== 'file') return cb(E.EISDIR)
    if (this.options.mode === 'block') return cb(0, 0)
    // file mode: the whole file is local before open returns (the paper's RAMDISK mode).
    // eager mode: the file moves to the front of the background fetch; open returns at once.
    const whole = this.fetchWholeFile(node.entry)
    if (this.options.mode === 'eager') return cb(0, 0)
    whole.then(() => cb(0, 0), (err: unknown) => {
      this.options.onError('open', p, err)
      cb(E.EIO)
    })
  }

  private read (p: string, buf: Buffer, len: number, pos: number, cb: (n: number) => void): void {
    this.stats.ops.read++
    const node = this.inodes.get(p)
    if (!node) return cb(E.ENOENT)
    const local = this.source.has(node.entry, pos, len)
    this.source.read(node.entry, pos, buf.subarray(0, len)).then((n) => {
      if (local) this.stats.bytesServedLocal += n
      else this.stats.bytesServedAfterFetch += n
      cb(n)
    }, (err: unknown) => {
      this.stats.readErrors++
      this.options.onError('read', p, err)
      cb(E.EIO)
    })
  }

  private fetchWholeFile (entry: DescribedEntry): Promise<void> {
    if (this.source.has(entry, 0, entry.size)) return Promise.resolve()
    this.pendingFiles.add(entry.path)
    const done = this.source.fetchFile(entry)
    done.then(() => {
      this.pendingFiles.delete(entry.path)
      if (this.pendingFiles.size === 0) this.stats.openedCompleteMs = Math.round(performance.now() - this.mountedAt)
    }, () => {}) // the open that asked reports the failure
    return done
  }

  private buildInodes (desc: Description): void {
    // Entries come sorted, parents first: one pass collects each directory's children.
    const keyOf = (e: DescribedEntry) => (e.path === '' ? '/' : `/${e.path}`)
    const children = new Map<string, string[]>()
    const subdirs = new Map<string, number>()
    for (const e of desc.entries) {
      const key = keyOf(e)
      if (e.type === 'dir') children.set(key, [])
      if (e.path === '') continue
      const parent = path.posix.dirname(key)
      children.get(parent)?.push(path.posix.basename(key))
      if (e.type === 'dir') subdirs.set(parent, (subdirs.get(parent) ?? 0) + 1)
    }
    let ino = 1
    for (const e of desc.entries) {
      const key = keyOf(e)
      const time = new Date(e.mtimeMs)
      const typeBits = e.type === 'dir' ? S_IFDIR : e.type === 'symlink' ? S_IFLNK : S_IFREG
      const size = e.type === 'symlink' ? Buffer.byteLength(e.target ?? '') : e.type === 'dir' ? 4096 : e.size
      this.inodes.set(key, {
        entry: e,
        children: children.get(key),
        stat: {
          mode: typeBits | (e.type === 'symlink' ? 0o777 : nodePermissions(e.mode) & READ_EXECUTE_BITS),
          uid: this.options.uid,
          gid: this.options.gid,
          size,
          nlink: e.type === 'dir' ? 2 + (subdirs.get(key) ?? 0) : 1,
          ino: ino++,
          blksize: 4096,
          blocks: Math.ceil(size / 512),
          atime: time,
          mtime: time,
          ctime: time
        }
      })
    }
  }
}
