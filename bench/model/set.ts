// The Pynamic-like set as the model sees it: 200 libraries laid end to end in the description's
// order (libpynamic_000 … 199, sorted by path), cut into 64 KiB pieces (lib/describe.ts: the
// smallest power of two ≥ 64 KiB that keeps the set under ~2,048 pieces), and which pieces the
// driver touches. Sizes follow bench/pynamic/README.md's formula for the pad, plus an equal share
// of the ELF overhead so that the total is the measured 48,533,312 bytes.
import { choosePieceLength } from '../../lib/describe.ts'

const SET_BYTES = 48_533_312
const LIBS = 200
const KIB = 1024
/** The kernel reads ahead 128 KiB from a file's start (the header, then the code near it). */
const FRONT_READ = 128 * KIB
/** The loader's relocations and the data a function reads: the writable segment at the file's end. */
const BACK_READ = 64 * KIB

export interface LibrarySet {
  readonly bytes: number
  readonly pieceLength: number
  readonly pieceCount: number
  /** Bytes of each piece (the last is short). */
  readonly pieceBytes: Float64Array
  /** The piece holding each library's ELF header: what the loader's open reads first. */
  readonly headers: Int32Array
  /** First piece past each library: opening library k makes pieces [headers[k], ends[k]) wanted. */
  readonly ends: Int32Array
  /** Every piece the driver reads (header and code, relocations and data), in file order. */
  readonly touched: Int32Array
  /** 1 for the pieces in `touched`. */
  readonly isTouched: Uint8Array
}

function padKiB (lib: number): number {
  const k = (lib * 7919) % 23
  if (k < 20) return 80 + 5 * k
  if (k === 20) return 320
  if (k === 21) return 512
  return Math.floor(lib / 23) % 3 === 0 ? 2560 : 1024
}

export function librarySet (): LibrarySet {
  const pads = Array.from({ length: LIBS }, (_, i) => padKiB(i) * KIB)
  const overhead = (SET_BYTES - pads.reduce((a, b) => a + b, 0)) / LIBS
  const sizes = pads.map((p) => Math.round(p + overhead))
  const total = sizes.reduce((a, b) => a + b, 0)
  const pieceLength = choosePieceLength(total)
  const pieceCount = Math.ceil(total / pieceLength)
  const pieceBytes = new Float64Array(pieceCount).fill(pieceLength)
  pieceBytes[pieceCount - 1] = total - (pieceCount - 1) * pieceLength
  const headers = new Int32Array(LIBS)
  const ends = new Int32Array(LIBS)
  const touched = new Set<number>()
  const span = (from: number, to: number) => {
    for (let p = Math.floor(from / pieceLength); p <= Math.floor((to - 1) / pieceLength); p++) touched.add(p)
  }
  let offset = 0
  sizes.forEach((size, i) => {
    headers[i] = Math.floor(offset / pieceLength)
    ends[i] = Math.floor((offset + size - 1) / pieceLength) + 1
    span(offset, offset + Math.min(size, FRONT_READ))
    span(offset + Math.max(0, size - BACK_READ), offset + size)
    offset += size
  })
  const isTouched = new Uint8Array(pieceCount)
  for (const p of touched) isTouched[p] = 1
  return { bytes: total, pieceLength, pieceCount, pieceBytes, headers, ends, touched: Int32Array.from([...touched].sort((a, b) => a - b)), isTouched }
}
