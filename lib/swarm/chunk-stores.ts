// abstract-chunk-store implementations handed to webtorrent (its default fs-chunk-store rewrites
// file names it finds unsafe, opens files writable and would be re-verified by hashing at start).
//  - SourceChunkStore: the head's read-only view of the source directory, one real file per
//    torrent file, so the seeder never copies or writes the libraries.
//  - FlatFileChunkStore: a node's store, one sparse file holding the whole torrent (the FS maps
//    file offsets onto it). It knows which pieces it holds, so a fresh store "verifies" instantly.
//    The node owns and removes the file; destroy() here only stops using it.
import { open, type FileHandle } from 'node:fs/promises'
import type { ChunkStore, ChunkStoreOptions } from 'webtorrent'

type Callback<T = void> = (err: Error | null, value?: T) => void
interface Range { offset?: number, length?: number }

abstract class ChunkStoreBase implements ChunkStore {
  readonly chunkLength: number
  protected readonly length: number
  protected closed = false

  constructor (chunkLength: number, length: number) {
    this.chunkLength = chunkLength
    this.length = length
  }

  abstract put (index: number, buf: Uint8Array, cb?: Callback): void
  protected abstract readRange (start: number, length: number): Promise<Buffer>
  protected abstract release (): Promise<void>

  get (index: number, opts: Range | null | undefined, cb: Callback<Uint8Array>): void {
    if (typeof opts === 'function') return this.get(index, null, opts)
    const pieceStart = index * this.chunkLength
    const pieceLength = Math.min(this.chunkLength, this.length - pieceStart)
    const offset = opts?.offset ?? 0
    const length = opts?.length ?? pieceLength - offset
    if (this.closed) return queueMicrotask(() => cb(new Error('store is closed')))
    if (index < 0 || pieceLength <= 0 || offset < 0 || offset + length > pieceLength) {
      return queueMicrotask(() => cb(new Error(`chunk ${index} range ${offset}+${length} is out of bounds`)))
    }
    this.checkReadable(index).then(() => this.readRange(pieceStart + offset, length))
      .then((buf) => cb(null, buf), (err: Error) => cb(err))
  }

  protected checkReadable (_index: number): Promise<void> {
    return Promise.resolve()
  }

  close (cb: Callback = () => {}): void {
    this.closed = true
    this.release().then(() => cb(null), (err: Error) => cb(err))
  }

  destroy (cb: Callback = () => {}): void {
    this.closed = true
    this.release().then(() => cb(null), (err: Error) => cb(err))
  }
}

export interface SourceFile {
  readonly path: string
  readonly offset: number
  readonly length: number
}

export class SourceChunkStore extends ChunkStoreBase {
  private readonly files: readonly SourceFile[]
  private readonly handles = new Map<string, Promise<FileHandle>>()
  private readonly defer: (index: number) => boolean

  constructor (chunkLength: number, opts: ChunkStoreOptions) {
    super(chunkLength, opts.length)
    this.files = opts.sourceFiles as SourceFile[]
    this.defer = (opts.defer as ((index: number) => boolean) | undefined) ?? (() => false)
  }

  /** A deferred read fails, which webtorrent answers with a BEP 6 reject: ask a node that has it. */
  protected checkReadable (index: number): Promise<void> {
    return this.defer(index) ? Promise.reject(new Error('deferred to peers')) : Promise.resolve()
  }

  put (_index: number, _buf: Uint8Array, cb: Callback = () => {}): void {
    queueMicrotask(() => cb(new Error('the source store is read-only')))
  }

  protected async readRange (start: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length)
    const end = start + length
    await Promise.all(this.files
      .filter((f) => f.offset < end && f.offset + f.length > start)
      .map(async (f) => {
        const from = Math.max(start, f.offset)
        const to = Math.min(end, f.offset + f.length)
        const handle = await this.handle(f.path)
        const { bytesRead } = await handle.read(out, from - start, to - from, from - f.offset)
        if (bytesRead !== to - from) throw new Error(`${f.path} is shorter than described`)
      }))
    return out
  }

  private handle (file: string): Promise<FileHandle> {
    let handle = this.handles.get(file)
    if (!handle) {
      handle = open(file, 'r')
      this.handles.set(file, handle)
      handle.catch(() => this.handles.delete(file))
    }
    return handle
  }

  protected async release (): Promise<void> {
    const handles = [...this.handles.values()]
    this.handles.clear()
    await Promise.allSettled(handles.map(async (h) => (await h).close()))
  }
}

export class FlatFileChunkStore extends ChunkStoreBase {
  /** Owned by the swarm node, which reads verified bytes through the same descriptor. */
  private readonly handle: FileHandle
  private readonly held: Uint8Array

  constructor (chunkLength: number, opts: ChunkStoreOptions) {
    super(chunkLength, opts.length)
    this.handle = opts.handle as FileHandle
    this.held = new Uint8Array(Math.ceil(opts.length / chunkLength))
  }

  put (index: number, buf: Uint8Array, cb: Callback = () => {}): void {
    if (this.closed) return queueMicrotask(() => cb(new Error('store is closed')))
    this.handle.write(buf, 0, buf.length, index * this.chunkLength)
      .then(() => { this.held[index] = 1; cb(null) }, (err: Error) => cb(err))
  }

  protected checkReadable (index: number): Promise<void> {
    return this.held[index] === 1 ? Promise.resolve() : Promise.reject(new Error(`chunk ${index} is not stored yet`))
  }

  protected async readRange (start: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length)
    await this.handle.read(out, 0, length, start)
    return out
  }

  protected async release (): Promise<void> {}
}
