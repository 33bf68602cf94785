// The byte-source interface the file system reads through. The FS knows nothing of BitTorrent:
// it asks a ByteSource for bytes of a described file. The swarm node implements it (and falls back
// to the source directories itself when the swarm stalls); so does a plain directory, for the FS's
// tests and the benchmark's pass-through.
import { open } from 'node:fs/promises'
import path from 'node:path'
import type { DescribedEntry } from './description.ts'

/**
 * The bytes a source already holds locally, for a reader that serves them without asking it (the
 * native FUSE server, on its own thread): the set's bytes sit in `fd` at their offsets in the set,
 * in chunks of `chunkLength`; a chunk's bit in `present` (high bit first) is set once its bytes are
 * in `fd`, and never cleared while the source is open.
 */
export interface LocalView {
  readonly fd: number
  readonly chunkLength: number
  readonly present: Uint8Array
}

export interface ByteSource {
  /** Where its local bytes can be read directly, if they can. */
  localView (): LocalView | undefined
  /** Whether the range is already local: a read of it will not wait for the network. */
  has (entry: DescribedEntry, offset: number, length: number): boolean
  /**
   * Makes bytes [offset, offset + length) of a regular file, clipped to its size, local: in the
   * local view, for a reader that reads them there. Resolves with the clipped length.
   */
  ready (entry: DescribedEntry, offset: number, length: number, signal?: AbortSignal): Promise<number>
  /**
   * Reads bytes [offset, offset + into.length) of a regular file, clipped to its size, into `into`;
   * resolves with how many it read. For a reader without the local view.
   */
  read (entry: DescribedEntry, offset: number, into: Buffer, signal?: AbortSignal): Promise<number>
  /** Makes the whole file local, ahead of anything fetched in the background. */
  fetchFile (entry: DescribedEntry, signal?: AbortSignal): Promise<void>
  /**
   * Starts fetching the file's first and last pieces, ahead of the background, without waiting:
   * what a loader reads of a library it opens (the ELF headers and the text segment's start; the
   * data segment, which it relocates, at the end).
   */
  fetchEnds (entry: DescribedEntry): void
  /** Fetches every file in the background; resolves when all are local. */
  fetchAll (signal?: AbortSignal): Promise<void>
  close (): Promise<void>
}

/** Clip a read to the file: the kernel asks for whole pages past the end. */
export function clipRange (entry: DescribedEntry, offset: number, length: number): number {
  return Math.max(0, Math.min(length, entry.size - offset))
}

/** Reads straight from a directory laid out as the description says (the FS's tests, the benchmark's pass-through). */
export class DirectorySource implements ByteSource {
  private readonly root: string

  constructor (root: string) {
    this.root = root
  }

  async read (entry: DescribedEntry, offset: number, into: Buffer): Promise<number> {
    const want = clipRange(entry, offset, into.length)
    if (want === 0) return 0
    const handle = await open(path.join(this.root, entry.path), 'r')
    try {
      return (await handle.read(into, 0, want, offset)).bytesRead
    } finally {
      await handle.close()
    }
  }

  has (): boolean {
    return true
  }

  async ready (entry: DescribedEntry, offset: number, length: number): Promise<number> {
    return clipRange(entry, offset, length)
  }

  localView (): undefined {
    return undefined // files are opened per read: no one descriptor holds the set
  }

  async fetchFile (): Promise<void> {}
  fetchEnds (): void {}
  async fetchAll (): Promise<void> {}
  async close (): Promise<void> {}
}
