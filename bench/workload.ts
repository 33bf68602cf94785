// The set every benchmark serves: the Pynamic-like libraries as lib/ plus DECOYS empty directories
// searched first, described once for p2prun, and the command that loads them all from a mount.
import { execa } from 'execa'
import { cp, mkdir, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const P2PRUN = path.join(ROOT, 'bin/p2prun')
const WORK = path.join(ROOT, 'bench/work')
/** Empty directories before the library directory on the search path: the loader's failed lookups. */
export const DECOYS = 8

export interface Workload {
  readonly set: string
  readonly bytes: number
  /** The set's p2prun description. */
  readonly description: string
  /** The shell command that loads every library from the set mounted at `root`. */
  readonly run: (root: string) => string
}

export const libraryPath = (root: string) => [...Array.from({ length: DECOYS }, (_, i) => `${root}/decoy${i}`), `${root}/lib`].join(':')

/** The drivers: the C programs search LD_LIBRARY_PATH, Python imports from PYTHONPATH. */
function driverCommand (gen: string, driver: string): (root: string) => string {
  if (driver === 'python') return (root) => `PYTHONPATH=${libraryPath(root)} /usr/bin/python3 -S ${gen}/driver.py`
  if (driver === 'driver' || driver === 'driver-dlopen') return (root) => `LD_LIBRARY_PATH=${libraryPath(root)} ${gen}/${driver}`
  throw new Error(`--driver ${driver}: expected driver, driver-dlopen or python`)
}

/** Generates the set if needed (bench/work/pynamic-NLIBS), lays it out and describes it. */
export async function workload (nlibs: number, driver: string): Promise<Workload> {
  const gen = path.join(WORK, `pynamic-${nlibs}`)
  const set = path.join(WORK, `set-${nlibs}`)
  const run = driverCommand(gen, driver)
  const manifest = await readFile(path.join(gen, 'manifest.txt'), 'utf8').catch(() => undefined)
  // A manifest without python= comes from a generator that made no Python modules.
  if (!manifest?.includes('python=')) await execa('bash', [path.join(ROOT, 'bench/pynamic/generate.sh'), gen, String(nlibs)], { stdio: 'inherit' })
  await rm(set, { recursive: true, force: true })
  await mkdir(set, { recursive: true })
  await cp(path.join(gen, 'libs'), path.join(set, 'lib'), { recursive: true, preserveTimestamps: true })
  for (let i = 0; i < DECOYS; i++) await mkdir(path.join(set, `decoy${i}`))
  const bytes = Number((await readFile(path.join(gen, 'manifest.txt'), 'utf8')).match(/bytes=(\d+)/)?.[1])
  const description = path.join(WORK, `set-${nlibs}.p2p.torrent`)
  await execa(P2PRUN, ['describe', set, '-o', description])
  return { set, bytes, description, run }
}
