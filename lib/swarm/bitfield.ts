// Which pieces a peer holds, in the wire format of BEP 3's bitfield message (high bit first).
export class Bitfield {
  readonly length: number
  readonly bytes: Uint8Array
  private held = 0

  constructor (length: number, bytes?: Uint8Array) {
    this.length = length
    this.bytes = new Uint8Array(Math.ceil(length / 8))
    if (bytes) {
      // Spare bits past `length` are ignored rather than trusted.
      this.bytes.set(bytes.subarray(0, this.bytes.length))
      const spare = this.bytes.length * 8 - length
      if (spare > 0) this.bytes[this.bytes.length - 1] = (this.bytes[this.bytes.length - 1] ?? 0) & (0xff << spare)
      for (let i = 0; i < length; i++) if (this.get(i)) this.held++
    }
  }

  static full (length: number): Bitfield {
    const b = new Bitfield(length)
    for (let i = 0; i < length; i++) b.set(i)
    return b
  }

  get count (): number {
    return this.held
  }

  get complete (): boolean {
    return this.held === this.length
  }

  get (i: number): boolean {
    return ((this.bytes[i >> 3] ?? 0) & (0x80 >> (i & 7))) !== 0
  }

  /** Returns whether the bit was newly set. */
  set (i: number): boolean {
    if (i < 0 || i >= this.length || this.get(i)) return false
    this.bytes[i >> 3] = (this.bytes[i >> 3] ?? 0) | (0x80 >> (i & 7))
    this.held++
    return true
  }
}
