// The pieces a swarm member handled last, kept to answer peers' block requests without a read:
// a node is asked for a piece right after it announced it, and asked for all its blocks at once.
export class PieceCache {
  private readonly maxBytes: number
  private readonly pieces = new Map<number, Buffer>()
  private bytes = 0

  constructor (maxBytes: number) {
    this.maxBytes = maxBytes
  }

  get (index: number): Buffer | undefined {
    return this.pieces.get(index)
  }

  put (index: number, data: Buffer): void {
    if (this.pieces.has(index) || data.length > this.maxBytes) return
    this.pieces.set(index, data)
    this.bytes += data.length
    // A Map iterates in insertion order: the first key is the oldest piece.
    for (const [oldest, buf] of this.pieces) {
      if (this.bytes <= this.maxBytes) break
      this.pieces.delete(oldest)
      this.bytes -= buf.length
    }
  }
}
