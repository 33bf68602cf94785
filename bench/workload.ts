// The sets the benchmarks serve, each described once for p2prun, with the command that loads them
// from a mount, and DECOYS empty directories searched first (the loader's failed lookups):
//  - pynamic (drivers driver, driver-dlopen, python): the Pynamic-like libraries as lib/;
//  - hpcc: Debian's HPCC with the shared libraries it links (Open MPI, BLAS, libc…) as lib/ and
//    Open MPI's and PMIx's plugins, which Open MPI dlopens at MPI_Init, as openmpi/ and pmix/
//    (examples/hpcc/collect.sh).
import { execa, type ResultPromise } from 'execa'
import { randomBytes } from 'node:crypto'
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { createInterface } from 'node:readline'
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

const HPCC = path.join(ROOT, 'examples/hpcc')

/**
 * Debian's hpcc as one Open MPI process per node (a singleton), with everything it loads on the
 * mount, staged and run as examples/hpcc does it through `p2prun`.
 */
async function hpccWorkload (): Promise<Workload> {
  const set = path.join(WORK, 'set-hpcc')
  await rm(set, { recursive: true, force: true })
  await execa('bash', [path.join(HPCC, 'collect.sh'), set])
  for (let i = 0; i < DECOYS; i++) await mkdir(path.join(set, `decoy${i}`))
  const description = path.join(WORK, 'set-hpcc.p2p.torrent')
  await execa(P2PRUN, ['describe', set, '-o', description])
  const bytes = Number((await execa('du', ['-sb', set])).stdout.split('\t')[0])
  return {
    set,
    bytes,
    description,
    // A subshell, so the exit status ends only the run, in a scratch directory (HPCC writes its
    // report to the current directory); rank.sh points Open MPI at the plugins on the mount.
    run: (root) => `(d=$(mktemp -d) && cd $d && cp ${HPCC}/hpccinf.txt . && ` +
      'OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader ' +
      `LD_LIBRARY_PATH=${libraryPath(root)}:${root}/openmpi:${root}/pmix ${HPCC}/rank.sh && ` +
      "grep -q 'End of HPC Challenge' hpccoutf.txt; r=$?; cd / && rm -rf $d; exit $r)"
  }
}

/** The drivers: the C programs search LD_LIBRARY_PATH, Python imports from PYTHONPATH. */
function driverCommand (gen: string, driver: string): (root: string) => string {
  if (driver === 'python') return (root) => `PYTHONPATH=${libraryPath(root)} /usr/bin/python3 -S ${gen}/driver.py`
  if (driver === 'driver' || driver === 'driver-dlopen') return (root) => `LD_LIBRARY_PATH=${libraryPath(root)} ${gen}/${driver}`
  throw new Error(`--driver ${driver}: expected driver, driver-dlopen, python or hpcc`)
}

/** Where bench/pynamic/generate.sh puts a set of NLIBS libraries, its drivers and driver.py. */
export const generatedDir = (nlibs: number) => path.join(WORK, `pynamic-${nlibs}`)

/** Generates the set if needed (bench/work/pynamic-NLIBS), lays it out and describes it. */
export async function workload (nlibs: number, driver: string): Promise<Workload> {
  if (driver === 'hpcc') return hpccWorkload()
  const gen = generatedDir(nlibs)
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

/** The middle value (the lower of the two middle ones for an even count); 0 for none. */
export const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)] ?? 0 }

/** sysconf(_SC_CLK_TCK) on Linux: the unit of /proc/PID/stat's CPU times. */
export const CLOCK_TICKS = 100

/** CPU seconds (user + system) process `pid` has used so far (/proc/PID/stat, in clock ticks). */
export async function processCpuSeconds (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS
}

/** The head of a load on it: a `p2prun serve` process, its description and its job secret. */
export interface LoadHead {
  readonly child: ResultPromise
  readonly description: string
  readonly secretHex: string
}

/**
 * Runs `load` against a real `p2prun serve` (on loopback, with a job secret of its own, `serveArgs`
 * added) of a one-library set (1 MiB) in a new temporary directory: the loads on the head
 * (tracker-load.ts, dht-load.ts), which move no data. The head is stopped and the directory
 * removed however `load` ends.
 */
export async function withLoadHead (prefix: string, p2prun: string, serveArgs: readonly string[], load: (head: LoadHead) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix))
  const set = path.join(dir, 'set')
  const description = path.join(dir, 'set.p2p.torrent')
  const secretHex = randomBytes(32).toString('hex')
  try {
    await mkdir(set)
    await writeFile(path.join(set, 'lib.so'), randomBytes(1 << 20))
    await execa(p2prun, ['describe', set, '-o', description])
    const child = execa(p2prun, ['serve', description, '--source', set, '--host', '127.0.0.1', '--quiet', ...serveArgs],
      { env: { ...process.env, P2PRUN_SECRET: secretHex }, reject: false, buffer: false })
    try {
      await load({ child, description, secretHex })
    } finally {
      child.kill('SIGTERM')
      await child
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Runs `task(i)` for every i from 0 to n - 1, `concurrency` at a time: a load's clients. */
export async function inPool (n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await task(next++)
  }))
}

/** The first line of a child's stdout that matches; fails if the child exits first. */
export function lineOf (child: ResultPromise, pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      const m = line.match(pattern)
      if (m) resolve(m)
    })
    child.then((r) => reject(new Error(`${r.command} exited: ${String(r.stderr).slice(-500)}`)), reject)
  })
}

export interface Serving {
  readonly tracker: string
  readonly seeder: string
  /** The head's DHT node, when served with `dht`: nodes find each other there instead of at the tracker. */
  readonly dht: string | undefined
  stop (): Promise<void>
}

/** `p2prun serve` for the set on `host`, started through `via` (e.g. the cluster's exec on the server node). */
/**
 * The heads the benchmarks start serve only nodes that prove the job's secret, as a launch's do:
 * every process the benchmark starts (the head, the agents) inherits it. `open` serves any client:
 * for an A/B against a build that predates job secrets.
 */
process.env.P2PRUN_SECRET ??= randomBytes(32).toString('hex')

export async function serveSet (w: Workload, host: string, via: readonly string[] = [], open = false, dht = false): Promise<Serving> {
  const serve = [P2PRUN, 'serve', w.description, '--source', w.set, '--host', host, '--quiet', ...(open ? ['--open'] : []), ...(dht ? ['--discovery', 'dht'] : [])]
  const [command, ...args] = [...via, ...serve]
  const child = execa(command as string, args, { reject: false })
  const stop = async () => { child.kill('SIGTERM'); await child }
  const m = await lineOf(child, /tracker=(\S+) seeder=(\S+)(?: dht=(\S+))?/).catch(async (err: unknown) => { await stop(); throw err })
  return { tracker: m[1] ?? '', seeder: m[2] ?? '', dht: m[3], stop }
}
