// Pieces a node is downloading: which 16 KiB blocks of each are free, asked for, or in, who sent
// them, and the SHA-1 check once the last block is in. Blocks lie in their place in the set's bytes
// (the node's store; the addon writes them there, or they are copied there), and the check reads
// the whole piece back (`bytesOf`): a piece's bytes there count only once it passed its check.
// Pieces and blocks are the torrent's (BEP 3); a piece that fails its check starts over, and its
// senders are named so the node can drop them.
import { hash } from 'node:crypto'
import { BLOCK_LENGTH, type BlockRequest } from './wire.ts'

const FREE = 0
const ASKED = 1
const IN = 2

interface Partial {
  /** The piece's place in the set's bytes. */
  readonly data: Buffer
  /** Per block: FREE, ASKED or IN. */
  readonly blocks: Uint8Array
  missing: number
  /** Per block: performance.now() when it was last asked for, and whether it was asked of a second peer. */
  readonly askedAt: Float64Array
  readonly again: Uint8Array
  /** Peer ids of the senders of its blocks. */
  readonly from: Set<string>
}

export interface Layout {
  readonly pieceLength: number
  readonly pieceCount: number
  readonly totalBytes: number
  /** 20 bytes of SHA-1 per piece. */
  readonly pieceHashes: Buffer
}

export type Received =
  | { readonly state: 'partial' }
  /** `from`: the peer ids that sent blocks of the piece; one of them, at least, sent bad bytes. */
  | { readonly state: 'failed', readonly from: readonly string[] }
  /** `from`: the peer ids that sent blocks of the piece (the head is told of those it sent: node.ts accept). */
  | { readonly state: 'verified', readonly from: readonly string[] }

/** Bytes of piece `index`: the piece length but for the last piece; 0 for an index past the end. */
export function pieceSize (layout: Layout, index: number): number {
  if (index < 0 || index >= layout.pieceCount) return 0
  return Math.min(layout.pieceLength, layout.totalBytes - index * layout.pieceLength)
}

const PARTIAL: Received = { state: 'partial' }

export class Assembly {
  private readonly layout: Layout
  /** The set's bytes, where blocks land. */
  private readonly into: Buffer
  /** Makes room for a piece's bytes in `into` before its first request; false: there is none. */
  private readonly claim: (start: number, length: number) => boolean
  private readonly partials = new Map<number, Partial>()
  /** Pieces that passed their check, or were settled from the source: never asked again. */
  private readonly done: Uint8Array

  /** A piece's bytes, whole, for its check: by default its place in `into`. */
  private readonly bytesOf: (piece: Buffer, start: number) => Buffer

  constructor (layout: Layout, into: Buffer, claim: (start: number, length: number) => boolean = () => true,
    bytesOf: (piece: Buffer, start: number) => Buffer = (piece) => piece) {
    this.layout = layout
    this.into = into
    this.claim = claim
    this.bytesOf = bytesOf
    this.done = new Uint8Array(layout.pieceCount)
  }

  /**
   * The next free run of blocks of a piece, at most `maxLength` bytes, now asked for; undefined
   * when every block is asked for or in, or the piece has no room.
   */
  reserve (index: number, maxLength: number, now = performance.now()): BlockRequest | undefined {
    if (this.done[index] === 1) return undefined
    let p = this.partials.get(index)
    if (!p) {
      const size = pieceSize(this.layout, index)
      const count = Math.ceil(size / BLOCK_LENGTH)
      const start = index * this.layout.pieceLength
      if (!this.claim(start, size)) return undefined
      p = { data: this.into.subarray(start, start + size), blocks: new Uint8Array(count), missing: count, askedAt: new Float64Array(count), again: new Uint8Array(count), from: new Set() }
      this.partials.set(index, p)
    }
    const first = p.blocks.indexOf(FREE)
    if (first < 0) return undefined
    let end = first + 1
    while (end < p.blocks.length && p.blocks[end] === FREE && (end - first + 1) * BLOCK_LENGTH <= maxLength) end++
    p.blocks.fill(ASKED, first, end)
    p.askedAt.fill(now, first, end)
    return this.request(p, index, first, end)
  }

  /**
   * Endgame: the next run of blocks asked for before `askedBefore` and still not in, now asked of a
   * second peer (once): a program waiting on a page fault need not wait out one slow peer's
   * request timeout. Whichever copy comes first is kept; the other is dropped on arrival.
   */
  reserveStalled (index: number, maxLength: number, askedBefore: number): BlockRequest | undefined {
    const p = this.partials.get(index)
    if (!p) return undefined
    const stalled = (b: number) => p.blocks[b] === ASKED && p.again[b] === 0 && (p.askedAt[b] ?? Infinity) < askedBefore
    let first = 0
    while (first < p.blocks.length && !stalled(first)) first++
    if (first === p.blocks.length) return undefined
    let end = first + 1
    while (end < p.blocks.length && stalled(end) && (end - first + 1) * BLOCK_LENGTH <= maxLength) end++
    p.again.fill(1, first, end)
    return this.request(p, index, first, end)
  }

  private request (p: Partial, index: number, first: number, end: number): BlockRequest {
    const begin = first * BLOCK_LENGTH
    return { index, begin, length: Math.min(end * BLOCK_LENGTH, p.data.length) - begin }
  }

  /**
   * A piece verified without the swarm (read from the source directories), its bytes already in
   * place: its blocks still on their way are dropped when they come, so they cannot overwrite it.
   */
  settle (index: number): void {
    this.partials.delete(index)
    this.done[index] = 1
  }

  /** Blocks asked for will not come (rejected, timed out, their peer left): free them again. */
  release (req: BlockRequest): void {
    const p = this.partials.get(req.index)
    if (!p) return
    const [first, end] = blocksOf(req)
    for (let b = first; b < end; b++) {
      // A block also asked of a second peer stays asked: that copy may still come.
      if (p.blocks[b] !== ASKED) continue
      if (p.again[b] === 1) p.again[b] = 0
      else p.blocks[b] = FREE
    }
  }

  /**
   * Takes blocks sent by peer `from` (copied, unless `data` already is their place: the addon read
   * them there); once the piece is whole, checks it and forgets it.
   */
  receive (req: BlockRequest, data: Buffer, from: string): Received {
    const p = this.partials.get(req.index)
    if (!p || data.length !== req.length || req.begin + req.length > p.data.length) return PARTIAL
    const [first, end] = blocksOf(req)
    if (data.buffer !== p.data.buffer || data.byteOffset !== p.data.byteOffset + req.begin) data.copy(p.data, req.begin)
    p.from.add(from)
    for (let b = first; b < end; b++) {
      if (p.blocks[b] !== IN) p.missing--
      p.blocks[b] = IN
    }
    if (p.missing > 0) return PARTIAL
    this.partials.delete(req.index)
    const want = this.layout.pieceHashes.subarray(20 * req.index, 20 * req.index + 20)
    // One call, not a Hash object per piece: its construction and digest were a third of the
    // agent's hashing time in the 32-node profile.
    if (!hash('sha1', this.bytesOf(p.data, req.index * this.layout.pieceLength), 'buffer').equals(want)) return { state: 'failed', from: [...p.from] }
    this.done[req.index] = 1
    return { state: 'verified', from: [...p.from] }
  }
}

/** The blocks [first, end) a request covers. */
function blocksOf (req: BlockRequest): [number, number] {
  return [Math.floor(req.begin / BLOCK_LENGTH), Math.ceil((req.begin + req.length) / BLOCK_LENGTH)]
}
