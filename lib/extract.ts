// Writes a described tree out of a ByteSource into a real directory, checking every file's SHA-256:
// `p2prun fetch --out DIR`, and the reference copy tests compare mounts against.
import { createHash } from 'node:crypto'
import { chmod, mkdir, open, readdir, symlink, utimes } from 'node:fs/promises'
import path from 'node:path'
import { nodePermissions, type DescribedEntry, type Description } from './description.ts'
import { P2prunError, usageError } from './errors.ts'
import type { ByteSource } from './store.ts'

const COPY_CHUNK = 1024 * 1024

export async function extractTree (desc: Description, source: ByteSource, outDir: string): Promise<void> {
  const root = path.resolve(outDir)
  await mkdir(root, { recursive: true })
  if ((await readdir(root)).length > 0) {
    throw usageError(`output directory ${root} is not empty`, 'pass a new or empty directory to --out')
  }
  for (const e of desc.entries) {
    const dest = path.join(root, e.path)
    if (e.type === 'dir') await mkdir(dest, { recursive: true, mode: 0o700 })
    else if (e.type === 'symlink') await symlink(e.target ?? '', dest)
    else await copyFile(source, e, dest)
  }
  // Modes and times last, deepest first: a read-only directory must be filled before it is closed.
  for (const e of [...desc.entries].reverse()) {
    if (e.type === 'symlink') continue
    const dest = path.join(root, e.path)
    await chmod(dest, nodePermissions(e.mode))
    const t = new Date(e.mtimeMs)
    await utimes(dest, t, t)
  }
}

async function copyFile (source: ByteSource, entry: DescribedEntry, dest: string): Promise<void> {
  const out = await open(dest, 'wx', 0o600)
  const hash = createHash('sha256')
  const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, entry.size))
  try {
    for (let offset = 0; offset < entry.size;) {
      const n = await source.read(entry, offset, buf)
      if (n === 0) break // the store had less than described: the hash check below says so
      hash.update(buf.subarray(0, n))
      await out.write(buf, 0, n, offset)
      offset += n
    }
  } finally {
    await out.close()
  }
  const digest = hash.digest('hex')
  if (digest !== entry.sha256) {
    throw new P2prunError('SWARM', `${entry.path} arrived with SHA-256 ${digest}, the description says ${entry.sha256}`,
      { hint: 'the seeder\'s source changed after the description was made: describe it again' })
  }
}
