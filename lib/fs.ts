// The library file system's policy: what the mount shows (an immutable inode table built once from
// the description: types, read-only modes, the owner, sizes, times, links, directory listings) and
// the two requests that may wait on the network, which the native FUSE server (lib/mount.ts)
// forwards here: an open in file or eager mode of a file not yet complete, and a read of bytes not
// yet local. Everything else it answers on its own thread. Nothing here knows BitTorrent or FUSE's
// wire: bytes come from a ByteSource.
import { constants } from 'node:os'
import path from 'node:path'
import type { DataMode } from './config.ts'
import { nodePermissions, type DescribedEntry, type Description } from './description.ts'
import { fuseError } from './errors.ts'
import type { ByteSource, LocalView } from './store.ts'

export interface FsOptions {
  readonly mode: DataMode
  readonly uid: number
  readonly gid: number
  /** Told about every failed read or open (the FS answers EIO); the caller logs. */
  readonly onError: (op: string, file: string, err: unknown) => void
}

/** The paper's Section IV-A numbers: how often each operation reached the FUSE server. */
export interface FsStats {
  ops: Record<OpName, number>
  /** Lookups answered "no such entry": the loader's failed LD_LIBRARY_PATH lookups (cached by the kernel after one). */
  enoent: number
  /** Bytes read from local chunks: by the server itself, or by JS when they arrived meanwhile. */
  bytesServedLocal: number
  bytesServedAfterFetch: number
  readErrors: number
  /** Requests the server handed to JS because they wait on the swarm. */
  readsForwarded: number
  opensForwarded: number
  /** Forwarded requests whose caller was interrupted (a signal): answered EINTR, their wait aborted. */
  interrupted: number
  /** ms from mount until every file opened so far was complete (file/eager mode), or null. */
  openedCompleteMs: number | null
}

type OpName = 'lookup' | 'getattr' | 'readdir' | 'readlink' | 'open' | 'read' | 'release' | 'statfs' | 'access' | 'refused'

/** The native server's own counts (native/fuse-session.h COUNTERS), merged into FsStats. */
export type ServerCounts = Record<OpName | 'enoent' | 'bytesServedLocal' | 'readsForwarded' | 'opensForwarded' | 'interrupted', number>

/**
 * The inode table as flat arrays, handed to the native server once. Inode i + 1 is entry i; inode 1
 * is the root. Strings (names, link targets) are NUL-terminated in `strings`, at `nameAt`/`targetAt`.
 */
export interface InodeTable {
  readonly modes: Uint32Array
  readonly nlinks: Uint32Array
  readonly parents: Uint32Array
  readonly sizes: Float64Array
  /** Where each file's bytes start in the set (the store's layout). */
  readonly offsets: Float64Array
  readonly mtimesMs: Float64Array
  readonly strings: Uint8Array
  readonly nameAt: Uint32Array
  readonly targetAt: Uint32Array
  readonly uid: number
  readonly gid: number
  readonly totalBytes: number
}

/** How the server takes JS's answer to a forwarded request (exactly one per request). */
export interface Replies {
  data (id: number, bytes: Buffer, length: number): void
  /** A read's bytes, now in the source's local view: the server reads them there. False: they could not be read (answered EIO). */
  stored (id: number): boolean
  open (id: number): void
  error (id: number, errno: number): void
}

const S_IFDIR = 0o040000
const S_IFREG = 0o100000
const S_IFLNK = 0o120000
// Nothing here can be written: of the permission bits, read and execute are kept.
const READ_EXECUTE_BITS = 0o555
const { EIO } = constants.errno

export class LibraryFs {
  readonly table: InodeTable
  private readonly entries: readonly DescribedEntry[]
  private readonly source: ByteSource
  private readonly options: FsOptions
  private readonly mountedAt = performance.now()
  private readonly pendingFiles = new Set<string>()
  /** Forwarded reads still waiting, by request id: an interrupt aborts the wait. */
  private readonly waiting = new Map<number, AbortController>()
  private openedCompleteMs: number | null = null
  private bytesLocal = 0
  private bytesAfterFetch = 0
  private readErrors = 0
  /** Whether the server can read the source's local bytes itself (see read). */
  private readonly hasView: boolean

  constructor (desc: Description, source: ByteSource, options: FsOptions) {
    this.entries = desc.entries
    this.source = source
    this.hasView = source.localView() !== undefined
    this.options = options
    this.table = buildTable(desc, options)
  }

  /** Where the server reads local chunks itself; undefined: every read is forwarded. */
  localView (): LocalView | undefined {
    return this.source.localView()
  }

  /**
   * A forwarded open. file mode: the whole file is local before open returns (the paper's RAMDISK
   * mode). eager mode: the file moves to the front of the background fetch; open returns at once.
   * block mode: its first and last pieces are asked for at once, as a loader will read both (the
   * reads still fetch what they need); open returns at once.
   */
  open (id: number, ino: number, reply: Replies): void {
    const entry = this.entryOf(ino)
    if (this.options.mode === 'block') {
      this.source.fetchEnds(entry)
      return reply.open(id)
    }
    const whole = this.fetchWholeFile(entry)
    if (this.options.mode !== 'file') return reply.open(id)
    whole.then(() => reply.open(id), (err: unknown) => {
      this.options.onError('open', `/${entry.path}`, err)
      reply.error(id, EIO)
    })
  }

  /**
   * A forwarded read of `length` bytes (already clipped to the file) that are not all local. With
   * a local view, the server itself reads them there once the source has them: JS never touches
   * the bytes (a copy through the store's mapping faulted in every page first: block mode at 32
   * nodes spent ~6 % of its agents' samples there).
   */
  read (id: number, ino: number, offset: number, length: number, reply: Replies): void {
    const entry = this.entryOf(ino)
    const local = this.source.has(entry, offset, length)
    const abort = new AbortController()
    this.waiting.set(id, abort)
    this.answerRead(id, entry, offset, length, reply, abort.signal).then((n) => {
      this.waiting.delete(id)
      if (local) this.bytesLocal += n
      else this.bytesAfterFetch += n
    }, (err: unknown) => {
      this.waiting.delete(id)
      if (abort.signal.aborted) return // interrupted: the server answered EINTR already
      this.readErrors++
      this.options.onError('read', `/${entry.path}`, err)
      reply.error(id, EIO) // dropped if the request was answered already
    })
  }

  /** Waits for a read's bytes and answers it; resolves with how many it answered. */
  private async answerRead (id: number, entry: DescribedEntry, offset: number, length: number, reply: Replies, signal: AbortSignal): Promise<number> {
    if (this.hasView) {
      const n = await this.source.ready(entry, offset, length, signal)
      if (!reply.stored(id)) throw fuseError(`the store does not hold the ${n} bytes at offset ${offset} that the source made local`, 'report this as a bug in p2prun')
      return n
    }
    const into = Buffer.allocUnsafe(length)
    const n = await this.source.read(entry, offset, into, signal)
    reply.data(id, into, n)
    return n
  }

  /** The server answered request `id` EINTR (its caller got a signal): stop waiting for its bytes. */
  interrupt (id: number): void {
    this.waiting.get(id)?.abort(fuseError('the reading process was interrupted'))
  }

  /** Stops every wait: the mount is going away. */
  abortAll (): void {
    for (const abort of this.waiting.values()) abort.abort(fuseError('the file system is unmounting'))
    this.waiting.clear()
  }

  stats (server: ServerCounts): FsStats {
    return {
      ops: {
        lookup: server.lookup, getattr: server.getattr, readdir: server.readdir, readlink: server.readlink, open: server.open,
        read: server.read, release: server.release, statfs: server.statfs, access: server.access, refused: server.refused
      },
      enoent: server.enoent,
      bytesServedLocal: server.bytesServedLocal + this.bytesLocal,
      bytesServedAfterFetch: this.bytesAfterFetch,
      readErrors: this.readErrors,
      readsForwarded: server.readsForwarded,
      opensForwarded: server.opensForwarded,
      interrupted: server.interrupted,
      openedCompleteMs: this.openedCompleteMs
    }
  }

  private entryOf (ino: number): DescribedEntry {
    const entry = this.entries[ino - 1]
    // The server forwards only inodes of its table, which has exactly these entries.
    if (!entry) throw new Error(`the FUSE server forwarded unknown inode ${ino}`)
    return entry
  }

  private fetchWholeFile (entry: DescribedEntry): Promise<void> {
    if (this.source.has(entry, 0, entry.size)) return Promise.resolve()
    this.pendingFiles.add(entry.path)
    const done = this.source.fetchFile(entry)
    done.then(() => {
      this.pendingFiles.delete(entry.path)
      if (this.pendingFiles.size === 0) this.openedCompleteMs = Math.round(performance.now() - this.mountedAt)
    }, () => {}) // the open that asked reports the failure
    return done
  }
}

function buildTable (desc: Description, options: FsOptions): InodeTable {
  const entries = desc.entries
  const n = entries.length
  const t = {
    modes: new Uint32Array(n), nlinks: new Uint32Array(n), parents: new Uint32Array(n), sizes: new Float64Array(n),
    offsets: new Float64Array(n), mtimesMs: new Float64Array(n), nameAt: new Uint32Array(n), targetAt: new Uint32Array(n)
  }
  // Entries come sorted, the root first and every parent before its children (parseDescription
  // refuses any other order): one pass numbers them and finds each one's parent.
  const inoOf = new Map<string, number>([['', 1]])
  const strings: Buffer[] = []
  let stringBytes = 0
  const intern = (s: string) => {
    const at = stringBytes
    const bytes = Buffer.from(`${s}\0`)
    strings.push(bytes)
    stringBytes += bytes.length
    return at
  }
  entries.forEach((e, i) => {
    inoOf.set(e.path, i + 1)
    const parent = e.path === '' ? 1 : inoOf.get(path.posix.dirname(e.path) === '.' ? '' : path.posix.dirname(e.path)) as number
    t.parents[i] = parent
    if (e.type === 'dir' && i > 0) t.nlinks[parent - 1] = (t.nlinks[parent - 1] ?? 0) + 1 // a subdirectory's ".."
    const typeBits = e.type === 'dir' ? S_IFDIR : e.type === 'symlink' ? S_IFLNK : S_IFREG
    t.modes[i] = typeBits | (e.type === 'symlink' ? 0o777 : nodePermissions(e.mode) & READ_EXECUTE_BITS)
    t.nlinks[i] = (t.nlinks[i] ?? 0) + (e.type === 'dir' ? 2 : 1)
    t.sizes[i] = e.type === 'symlink' ? Buffer.byteLength(e.target ?? '') : e.type === 'dir' ? 4096 : e.size
    t.offsets[i] = e.torrentOffset ?? 0
    t.mtimesMs[i] = e.mtimeMs
    t.nameAt[i] = intern(path.posix.basename(e.path))
    t.targetAt[i] = e.type === 'symlink' ? intern(e.target ?? '') : t.nameAt[i] ?? 0
  })
  return { ...t, strings: Buffer.concat(strings), uid: options.uid, gid: options.gid, totalBytes: desc.totalBytes }
}
