// Small file-system helpers more than one part of p2prun needs.
import { access, constants, link, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { usageError } from './errors.ts'

/** A program name that exec would run: found (as a path, or on PATH) and executable; else a usage error. */
export async function checkProgram (name: string, env: NodeJS.ProcessEnv): Promise<void> {
  for (const c of programCandidates(name, env)) {
    if (await access(c, constants.F_OK).then(() => true, () => false)) {
      if (await isExecutable(c)) return
      throw usageError(`program ${name} is not executable`, `chmod +x ${name}`)
    }
  }
  throw usageError(`program ${name} not found`, name.includes('/') ? 'check the path' : 'give its path, or put it on PATH')
}

/** Where a program name would be run from: itself if it has a slash, else each PATH directory. */
export function programCandidates (name: string, env: NodeJS.ProcessEnv): string[] {
  if (name.includes('/')) return [path.resolve(name)]
  return (env.PATH ?? '').split(':').filter(Boolean).map((dir) => path.join(dir, name))
}

/** The executable a program name resolves to, as exec would find it, or undefined. */
export async function findExecutable (name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const file of programCandidates(name, env)) if (await isExecutable(file)) return file
  return undefined
}

/**
 * The file a program name means: the name itself (against `cwd`) if it has a slash, whether or
 * not it exists; else the first executable of that name on PATH, or undefined.
 */
export async function programFile (name: string, env: NodeJS.ProcessEnv, cwd: string): Promise<string | undefined> {
  return name.includes('/') ? path.resolve(cwd, name) : findExecutable(name, env)
}

export function isExecutable (file: string): Promise<boolean> {
  return access(file, constants.X_OK).then(() => true, () => false)
}

/** Whether `file` is `dir` or lies under it ('/'-separated paths; /a/bc is not under /a/b). */
export function isWithin (dir: string, file: string): boolean {
  return file === dir || file.startsWith(`${dir}/`)
}

/**
 * Readers see the old content or the new, never a part: write a temporary file, then rename it in
 * place. `exclusive`: link it instead, so a file already there stays (the first writer wins) and
 * this throws EEXIST.
 */
export async function writeAtomic (file: string, data: string | Uint8Array, options: { exclusive?: boolean } = {}): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`
  try {
    await writeFile(tmp, data)
    // A rename leaves no temporary file; a link leaves it, to remove whether it linked or not.
    if (!options.exclusive) return await rename(tmp, file)
    await link(tmp, file)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  await rm(tmp, { force: true })
}
