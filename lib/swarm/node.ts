// A node's membership in the job's swarm, exposed as a ByteSource: "bytes [offset, length) of file
// F" and "all of file F", each waiting only for the pieces that cover it. Bytes land in one sparse
// file in the store directory (memory-backed /dev/shm by default) and are read back from there.
import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import WebTorrent, { type Torrent } from 'webtorrent'
import type { DescribedEntry, Description } from '../description.ts'
import { P2prunError, swarmError } from '../errors.ts'
import { clipRange, type ByteSource } from '../store.ts'
import { FlatFileChunkStore } from './chunk-stores.ts'
import { PiecePicker, Priority } from './picker.ts'
import { clientOptions, isHeadWire, torrentOptions, tuneConnections } from './tuning.ts'

export interface NodeOptions {
  readonly storeDir: string
  readonly port: number
  readonly maxConns: number
  readonly numwant: number
  /** Reject waiting reads when no byte has arrived for this long. */
  readonly stallTimeoutMs: number
  /** Trackers to announce to, replacing the description's if given. */
  readonly trackers?: readonly string[]
  /** host:port peers to connect to directly (the head's seeder), besides the description's. */
  readonly seeders?: readonly string[]
}

export interface NodeStats {
  readonly fromHead: number
  readonly fromPeers: number
  readonly uploaded: number
  readonly piecesHave: number
  readonly pieceCount: number
  readonly peers: number
}

const STALL_CHECK_MS = 1000
const READ_AHEAD_PIECES = 1

interface Waiter {
  readonly missing: Set<number>
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

export class SwarmNode implements ByteSource {
  readonly description: Description
  readonly storePath: string
  private readonly client: WebTorrent
  private readonly torrent: Torrent
  private readonly picker: PiecePicker
  private readonly data: FileHandle
  private readonly waiters = new Set<Waiter>()
  private readonly stallTimer: NodeJS.Timeout
  private readonly stallTimeoutMs: number
  private lastProgress = Date.now()
  private fromHead = 0
  private fromPeers = 0
  private closing: Promise<void> | undefined

  static async join (desc: Description, opts: NodeOptions): Promise<SwarmNode> {
    const trackers = opts.trackers ?? desc.trackers
    const seeders = [...new Set([...desc.seeders, ...(opts.seeders ?? [])])]
    if (trackers.length === 0 && seeders.length === 0) {
      throw swarmError('the description names no tracker or seeder to get bytes from',
        'pass --tracker URL or --seeder HOST:PORT (printed by `p2prun serve`)')
    }
    const storePath = await mkdtemp(path.join(opts.storeDir, `p2prun-${desc.infoHash.slice(0, 16)}-`))
      .catch((err: NodeJS.ErrnoException) => {
        throw swarmError(`cannot create a store in ${opts.storeDir}: ${err.code}`, 'pass --store-dir with a writable directory', err)
      })
    const data = await open(path.join(storePath, 'data'), 'wx+', 0o600)
    const client = new WebTorrent(clientOptions({ role: 'node', port: opts.port, maxConns: opts.maxConns, numwant: opts.numwant }))
    try {
      const torrent = await new Promise<Torrent>((resolve, reject) => {
        client.once('error', reject)
        const t = client.add(desc.torrent, {
          ...torrentOptions(),
          announce: [...trackers],
          path: storePath,
          store: FlatFileChunkStore,
          storeOpts: { handle: data },
          storeCacheSlots: 0, // the store is already in memory (tmpfs)
          deselect: true // webtorrent selects nothing: the picker asks for what the FS or fetchAll wants
        })
        t.once('error', reject)
        tuneConnections(t, client.peerId)
        t.once('ready', () => resolve(t))
      })
      for (const s of seeders) torrent.addPeer(s)
      return new SwarmNode(desc, client, torrent, data, storePath, opts.stallTimeoutMs)
    } catch (err) {
      await new Promise<void>((resolve) => client.destroy(() => resolve()))
      await data.close()
      await rm(storePath, { recursive: true, force: true })
      throw new P2prunError('SWARM', `cannot join the swarm: ${(err as Error).message}`, { cause: err })
    }
  }

  private constructor (desc: Description, client: WebTorrent, torrent: Torrent, data: FileHandle,
    storePath: string, stallTimeoutMs: number) {
    this.description = desc
    this.client = client
    this.torrent = torrent
    this.data = data
    this.storePath = storePath
    this.stallTimeoutMs = stallTimeoutMs
    this.picker = new PiecePicker(torrent, desc.pieceCount)
    torrent.on('wire', (wire) => {
      wire.on('download', (bytes: number) => {
        this.lastProgress = Date.now()
        if (isHeadWire(wire)) this.fromHead += bytes
        else this.fromPeers += bytes
      })
    })
    torrent.on('verified', (index: number) => this.onVerified(index))
    torrent.on('error', (err: Error) => this.failAll(swarmError(`swarm error: ${err.message}`, undefined, err)))
    this.stallTimer = setInterval(() => this.checkStall(), STALL_CHECK_MS).unref()
  }

  has (entry: DescribedEntry, offset: number, length: number): boolean {
    const want = clipRange(entry, offset, length)
    if (want === 0 || entry.torrentOffset === undefined) return true
    const [first, last] = this.pieceSpan(entry.torrentOffset + offset, want)
    for (let i = first; i <= last; i++) if (!this.torrent.bitfield.get(i)) return false
    return true
  }

  async read (entry: DescribedEntry, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    const want = clipRange(entry, offset, length)
    if (want === 0 || entry.torrentOffset === undefined) return Buffer.alloc(0)
    const start = entry.torrentOffset + offset
    this.readAhead(entry, start + want)
    await this.waitForRange(start, want, Priority.Read, signal)
    const out = Buffer.alloc(want)
    const { bytesRead } = await this.data.read(out, 0, want, start)
    return out.subarray(0, bytesRead)
  }

  async fetchFile (entry: DescribedEntry, signal?: AbortSignal): Promise<void> {
    if (entry.torrentOffset === undefined) return
    await this.waitForRange(entry.torrentOffset, entry.size, Priority.File, signal)
  }

  async fetchAll (signal?: AbortSignal): Promise<void> {
    await this.waitForRange(0, this.description.totalBytes, Priority.Background, signal)
  }

  stats (): NodeStats {
    let have = 0
    for (let i = 0; i < this.description.pieceCount; i++) if (this.torrent.bitfield.get(i)) have++
    return {
      fromHead: this.fromHead,
      fromPeers: this.fromPeers,
      uploaded: this.torrent.uploaded,
      piecesHave: have,
      pieceCount: this.description.pieceCount,
      peers: this.torrent.numPeers
    }
  }

  /** Leaves the swarm; the store is removed unless `keepStore` (for inspection after a run). */
  close (options: { keepStore?: boolean } = {}): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.stallTimer)
      this.failAll(swarmError('the swarm node was closed'))
      await new Promise<void>((resolve) => this.client.destroy(() => resolve()))
      await this.data.close()
      if (!options.keepStore) await rm(this.storePath, { recursive: true, force: true })
    })()
    return this.closing
  }

  private waitForRange (start: number, length: number, priority: Priority, signal?: AbortSignal): Promise<void> {
    if (this.closing) return Promise.reject(swarmError('the swarm node is closed'))
    const [first, last] = this.pieceSpan(start, length)
    const missing = new Set<number>()
    for (let i = first; i <= last; i++) if (!this.torrent.bitfield.get(i)) missing.add(i)
    if (missing.size === 0) return Promise.resolve()
    signal?.throwIfAborted()
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => { this.waiters.delete(waiter); reject(signal?.reason) }
      const waiter: Waiter = {
        missing,
        resolve: () => { signal?.removeEventListener('abort', onAbort); resolve() },
        reject: (err) => { signal?.removeEventListener('abort', onAbort); reject(err) }
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      // The stall clock runs only while someone waits: an idle node is not stalled.
      if (this.waiters.size === 0) this.lastProgress = Date.now()
      this.waiters.add(waiter)
      this.picker.want(first, last, priority)
    })
  }

  /** Queue the piece after a read (within the file) behind the reads: programs read forward. */
  private readAhead (entry: DescribedEntry, from: number): void {
    const fileEnd = (entry.torrentOffset ?? 0) + entry.size
    if (from >= fileEnd) return
    const [first, last] = this.pieceSpan(from, Math.min(fileEnd - from, READ_AHEAD_PIECES * this.description.pieceLength))
    for (let i = first; i <= last; i++) {
      if (!this.torrent.bitfield.get(i)) { this.picker.want(i, last, Priority.File); return }
    }
  }

  private pieceSpan (start: number, length: number): [number, number] {
    const pieceLength = this.description.pieceLength
    return [Math.floor(start / pieceLength), Math.floor((start + length - 1) / pieceLength)]
  }

  private onVerified (index: number): void {
    this.lastProgress = Date.now()
    for (const waiter of this.waiters) {
      waiter.missing.delete(index)
      if (waiter.missing.size === 0) {
        this.waiters.delete(waiter)
        waiter.resolve()
      }
    }
  }

  private checkStall (): void {
    if (this.waiters.size === 0 || Date.now() - this.lastProgress < this.stallTimeoutMs) return
    const peers = this.torrent.numPeers
    this.failAll(swarmError(`no data arrived for ${Math.round(this.stallTimeoutMs / 1000)} s ` +
      `(${peers} peer${peers === 1 ? '' : 's'} connected): the seeder is unreachable or the swarm is stuck`,
    'check that `p2prun serve` is running on the head node and that its ports are reachable from this node'))
  }

  private failAll (err: Error): void {
    const waiters = [...this.waiters]
    this.waiters.clear()
    for (const w of waiters) w.reject(err)
  }
}
