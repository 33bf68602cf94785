// The dynamic loader's cache (/etc/ld.so.cache, written by ldconfig): library name → paths, the
// step of the loader's search between DT_RUNPATH and its default directories. Only glibc's current
// format ("glibc-ld.so.cache1.1", alone or after the old libc5 table) is read; a file in any other
// shape counts as no cache, as it would for a loader that cannot use it.
import { readFile } from 'node:fs/promises'

export const LD_CACHE_FILE = '/etc/ld.so.cache'

const OLD_MAGIC = 'ld.so-1.7.0'
const NEW_MAGIC = 'glibc-ld.so.cache1.1'
const NEW_HEADER = 48
const NEW_ENTRY = 24
const OLD_HEADER = 16
const OLD_ENTRY = 12

/** Paths per library name, in the cache's order (ldconfig writes the preferred one first). */
export type LdCache = ReadonlyMap<string, readonly string[]>

export async function readLdCache (file = LD_CACHE_FILE): Promise<LdCache> {
  const bytes = await readFile(file).catch(() => undefined)
  return bytes ? parseLdCache(bytes) : new Map()
}

export function parseLdCache (bytes: Buffer): LdCache {
  const out = new Map<string, string[]>()
  let start = 0
  if (bytes.toString('latin1', 0, OLD_MAGIC.length) === OLD_MAGIC && bytes.length >= OLD_HEADER) {
    // The new table follows the old one, aligned to 8 bytes.
    start = (OLD_HEADER + bytes.readUInt32LE(OLD_MAGIC.length + 1) * OLD_ENTRY + 7) & ~7
  }
  if (start + NEW_HEADER > bytes.length || bytes.toString('latin1', start, start + NEW_MAGIC.length) !== NEW_MAGIC) return out
  const count = bytes.readUInt32LE(start + 20)
  // String offsets count from the start of the new table's header.
  const text = (offset: number) => {
    const at = start + offset
    if (offset === 0 || at >= bytes.length) return undefined
    const end = bytes.indexOf(0, at)
    return bytes.toString('utf8', at, end === -1 ? bytes.length : end)
  }
  for (let i = 0; i < count; i++) {
    const at = start + NEW_HEADER + i * NEW_ENTRY
    if (at + NEW_ENTRY > bytes.length) break
    const name = text(bytes.readUInt32LE(at + 4))
    const path = text(bytes.readUInt32LE(at + 8))
    if (!name || !path) continue
    const paths = out.get(name)
    if (paths) paths.push(path)
    else out.set(name, [path])
  }
  return out
}
