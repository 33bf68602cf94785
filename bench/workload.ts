// The sets the benchmarks serve, each described once for p2prun, with the command that loads them
// from a mount, and DECOYS empty directories searched first (the loader's failed lookups):
//  - pynamic (drivers driver, driver-dlopen, python): the Pynamic-like libraries as lib/;
//  - hpcc: Debian's HPCC with the shared libraries it links (Open MPI, BLAS, libc…) as lib/ and
//    Open MPI's and PMIx's plugins, which Open MPI dlopens at MPI_Init, as openmpi/ and pmix/.
import { execa } from 'execa'
import { cp, mkdir, readFile, realpath, rm, writeFile } from 'node:fs/promises'
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

const OMPI_PLUGINS = '/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3'
const PMIX_PLUGINS = '/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix'
// A small HPL problem: the run is about loading, not computing (~0.3 s of compute per node).
const HPCC_INPUT = ['HPCC on p2prun', 'bench/workload.ts', 'HPL.out', '6', '1', '400', '1', '80', '0', '1', '1', '1', '16.0',
  '1', '2', '1', '4', '1', '2', '1', '1', '1', '1', '1', '1', '2', '64', '0', '0', '1', '8',
  '##### This line (no. 32) is ignored (it serves as a separator). ######', '0', '1200', '0', '40'].join('\n') + '\n'

/** Debian's hpcc as one Open MPI process per node (a singleton) with all it loads on the mount. */
async function hpccWorkload (): Promise<Workload> {
  const set = path.join(WORK, 'set-hpcc')
  await rm(set, { recursive: true, force: true })
  await mkdir(path.join(set, 'lib'), { recursive: true })
  const ldd = await execa('ldd', ['/usr/bin/hpcc'])
  for (const m of ldd.stdout.matchAll(/=> (\/\S+)/g)) {
    const lib = m[1] as string
    await cp(await realpath(lib), path.join(set, 'lib', path.basename(lib)), { preserveTimestamps: true })
  }
  await cp(OMPI_PLUGINS, path.join(set, 'openmpi'), { recursive: true, dereference: true, preserveTimestamps: true })
  await cp(PMIX_PLUGINS, path.join(set, 'pmix'), { recursive: true, dereference: true, preserveTimestamps: true })
  for (let i = 0; i < DECOYS; i++) await mkdir(path.join(set, `decoy${i}`))
  const input = path.join(WORK, 'hpccinf.txt')
  await writeFile(input, HPCC_INPUT)
  const description = path.join(WORK, 'set-hpcc.p2p.torrent')
  await execa(P2PRUN, ['describe', set, '-o', description])
  const bytes = Number((await execa('du', ['-sb', set])).stdout.split('\t')[0])
  return {
    set,
    bytes,
    description,
    // A subshell, so the exit status ends only the run, in a scratch directory (HPCC writes its
    // report to the current directory).
    run: (root) => '(d=$(mktemp -d) && cd $d && cp ' + input + ' . && ' +
      `OMPI_MCA_mca_base_component_path=${root}/openmpi PMIX_MCA_mca_base_component_path=${root}/pmix ` +
      'OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader ' +
      `LD_LIBRARY_PATH=${libraryPath(root)} /usr/bin/hpcc && grep -q 'End of HPC Challenge' hpccoutf.txt; r=$?; cd / && rm -rf $d; exit $r)`
  }
}

/** The drivers: the C programs search LD_LIBRARY_PATH, Python imports from PYTHONPATH. */
function driverCommand (gen: string, driver: string): (root: string) => string {
  if (driver === 'python') return (root) => `PYTHONPATH=${libraryPath(root)} /usr/bin/python3 -S ${gen}/driver.py`
  if (driver === 'driver' || driver === 'driver-dlopen') return (root) => `LD_LIBRARY_PATH=${libraryPath(root)} ${gen}/${driver}`
  throw new Error(`--driver ${driver}: expected driver, driver-dlopen, python or hpcc`)
}

/** Generates the set if needed (bench/work/pynamic-NLIBS), lays it out and describes it. */
export async function workload (nlibs: number, driver: string): Promise<Workload> {
  if (driver === 'hpcc') return hpccWorkload()
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
