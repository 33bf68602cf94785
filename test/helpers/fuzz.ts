// Seeded fuzzing of peer bytes: a reproducible generator, and mutations of a well-formed message
// (another length or id, cut short, trailing bytes, noise). A failure names its seed.

/** A seeded generator (mulberry32): a failure names the seed that reproduces it. */
export function generator (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

export function mutate (msg: Buffer, rand: () => number): Buffer {
  const out = Buffer.from(msg)
  switch (Math.floor(rand() * 5)) {
    case 0: // another length
      out.writeUInt32BE(rand() < 0.5 ? Math.floor(rand() * 40) : Math.floor(rand() * 2 ** 32), 0)
      return out
    case 1: // another id
      if (out.length > 4) out[4] = Math.floor(rand() * 256)
      return out
    case 2: // cut short
      return out.subarray(0, Math.floor(rand() * out.length))
    case 3: // trailing bytes
      return Buffer.concat([out, randomBytesFrom(rand, 1 + Math.floor(rand() * 20))])
    default: // noise
      return randomBytesFrom(rand, 1 + Math.floor(rand() * 40))
  }
}

export function randomBytesFrom (rand: () => number, n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)))
}
