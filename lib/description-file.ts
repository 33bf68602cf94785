// A description file on disk, as the commands meet it: read with an error that names the file
// and says how to make one, and written whole (a failed run never leaves half a description).
import { readFile } from 'node:fs/promises'
import { parseDescription, type Description } from './description.ts'
import { usageError } from './errors.ts'
import { writeAtomic } from './files.ts'

/** How a description file's name ends: `p2prun describe DIR` writes DIR's name with it. */
export const DESCRIPTION_SUFFIX = '.p2p.torrent'

export async function readDescription (file: string, expectInfoHash?: string): Promise<Description> {
  const bytes = await readFile(file).catch((err: NodeJS.ErrnoException) => {
    throw usageError(`cannot read description ${file}: ${err.code === 'ENOENT' ? 'no such file' : err.code}`,
      'make one with `p2prun describe DIR -o FILE`')
  })
  return parseDescription(bytes, { source: file, expectInfoHash })
}

export async function writeAtomically (file: string, bytes: Uint8Array): Promise<void> {
  try {
    await writeAtomic(file, bytes)
  } catch (err) {
    throw usageError(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      'choose a writable output path')
  }
}
