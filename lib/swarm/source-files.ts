// The head's read-only view of the source directory as the torrent's byte stream: a piece is read
// straight from the real files it spans, so the seeder never copies or writes the libraries.
import { createHash } from 'node:crypto'
import { open, stat, type FileHandle } from 'node:fs/promises'
import { sourcePath, type SourceLayout } from '../source-layout.ts'
import type { Description } from '../description.ts'
import { sourceError } from '../errors.ts'
import { pieceSize, type Layout } from './assembly.ts'

export interface SourceFile {
  readonly path: string
  /** Where the file starts in the torrent's byte stream. */
  readonly offset: number
  readonly length: number
}

/** The described files as they lie in the directories the set was described from. */
export function sourceFilesOf (desc: Description, layout: SourceLayout): SourceFiles {
  const files = desc.entries
    .filter((e) => e.torrentFile !== undefined)
    .map((e) => ({ path: sourcePath(layout, e.path), offset: e.torrentOffset ?? 0, length: e.size }))
  return new SourceFiles(files, desc)
}

export class SourceFiles {
  private readonly files: readonly SourceFile[]
  private readonly layout: Layout
  private readonly handles = new Map<string, Promise<FileHandle>>()

  constructor (files: readonly SourceFile[], layout: Layout) {
    this.files = files
    this.layout = layout
  }

  async readPiece (index: number): Promise<Buffer> {
    const start = index * this.layout.pieceLength
    const out = Buffer.allocUnsafe(pieceSize(this.layout, index))
    const end = start + out.length
    await Promise.all(this.filesOf(index)
      .map(async (f) => {
        const from = Math.max(start, f.offset)
        const to = Math.min(end, f.offset + f.length)
        const { bytesRead } = await (await this.handle(f.path)).read(out, from - start, to - from, from - f.offset)
        if (bytesRead !== to - from) throw new Error(`${f.path} is shorter than described`)
      }))
    return out
  }

  /** The files piece `index` spans. */
  filesOf (index: number): SourceFile[] {
    const start = index * this.layout.pieceLength
    const end = start + pieceSize(this.layout, index)
    return this.files.filter((f) => f.offset < end && f.offset + f.length > start)
  }

  /** Whether a piece's bytes hash to what the description says. */
  matches (index: number, piece: Buffer): boolean {
    return createHash('sha1').update(piece).digest().equals(this.layout.pieceHashes.subarray(20 * index, 20 * index + 20))
  }

  /** How many pieces of the source do not hash to the description's. */
  async countMismatches (): Promise<number> {
    let bad = 0
    for (let i = 0; i < this.layout.pieceCount; i++) {
      if (!await this.readPiece(i).then((piece) => this.matches(i, piece), () => false)) bad++
    }
    return bad
  }

  async close (): Promise<void> {
    const handles = [...this.handles.values()]
    this.handles.clear()
    await Promise.allSettled(handles.map(async (h) => (await h).close()))
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
}

/**
 * Cheap check that the source is what was described: every file present with the described size
 * (a size mismatch is fatal) and mtime (a mismatch only means "hash it to be sure").
 */
export async function sourceMatches (desc: Description, layout: SourceLayout): Promise<boolean> {
  let same = true
  for (const e of desc.entries) {
    if (e.torrentFile === undefined) continue
    const file = sourcePath(layout, e.path)
    const st = await stat(file).catch(() => undefined)
    if (!st?.isFile()) {
      throw sourceError(`${file} is in the description but not in the source`, 'pass the directory the description was made from')
    }
    if (st.size !== e.size) {
      throw sourceError(`${file} has ${st.size} bytes, the description says ${e.size}`,
        'describe the directory again: it changed since the description was made')
    }
    if (Math.trunc(st.mtimeMs) !== e.mtimeMs) same = false
  }
  return same
}
