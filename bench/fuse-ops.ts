// The paper's Section IV-A count: how many FUSE operations reach the file system process while a
// driver loads the Pynamic-like set, per library, on one node (loopback, no shaping).
//   pass-through  the same FS code over the plain directory, with libfuse's default caching
//                 (entries and attributes 1 s, failed lookups not cached): what any FUSE file
//                 system in front of the libraries would see
//   p2p-MODE      `p2prun mount --mode MODE` against a local `p2prun serve`: entries, attributes
//                 and failed lookups cached for a day, since the description says they never change
// The kernel looks a name up (lookup) and then uses its attributes until they expire; getattr
// comes only after that, or for the root.
// Usage: node bench/fuse-ops.ts [--drivers driver,driver-dlopen,python] [--modes block,file,eager] [--libs 200]
import { execa } from 'execa'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { parseDescription } from '../lib/description.ts'
import { type FsStats, LibraryFs } from '../lib/fs.ts'
import { mountFs } from '../lib/mount.ts'
import { DirectorySource } from '../lib/store.ts'
import { lineOf, P2PRUN, serveSet, workload, type Workload } from './workload.ts'

const { values: opts } = parseArgs({
  options: {
    drivers: { type: 'string', default: 'driver,driver-dlopen,python' },
    libs: { type: 'string', default: '200' },
    modes: { type: 'string', default: 'block,file,eager' }
  }
})

// libfuse's defaults: entries and attributes 1 s, failed lookups not cached.
const KERNEL_DEFAULT_CACHE_S = 1
const KERNEL_DEFAULT_NEGATIVE_S = 0

async function passThrough (w: Workload, mnt: string): Promise<FsStats> {
  const desc = parseDescription(await readFile(w.description))
  const fs = new LibraryFs(desc, new DirectorySource(w.set), { mode: 'block', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, onError: () => {} })
  const mounted = await mountFs(mnt, fs, { fsname: 'passthrough', allowOther: false, cacheSeconds: KERNEL_DEFAULT_CACHE_S, negativeCacheSeconds: KERNEL_DEFAULT_NEGATIVE_S, device: '/dev/fuse', log: console.error })
  try {
    await execa('sh', ['-c', `${w.run(mnt)} > /dev/null`])
  } finally {
    await mounted.unmount()
  }
  return fs.stats(mounted.counters())
}

async function p2prun (w: Workload, mnt: string, mode: string, dir: string): Promise<FsStats> {
  const serving = await serveSet(w, '127.0.0.1')
  try {
    const statsFile = path.join(dir, `stats-${mode}.json`)
    const mount = execa(P2PRUN, ['mount', w.description, mnt, '--mode', mode, '--tracker', serving.tracker, '--seeder', serving.seeder,
      '--store-dir', dir, '--stats', statsFile, '--quiet'], { reject: false })
    try {
      await lineOf(mount, /^mounted /)
      await execa('sh', ['-c', `${w.run(mnt)} > /dev/null`])
    } finally {
      mount.kill('SIGTERM')
      await mount
    }
    return (JSON.parse(await readFile(statsFile, 'utf8')) as { fs: FsStats }).fs
  } finally {
    await serving.stop()
  }
}

async function countFor (driver: string): Promise<void> {
  const w = await workload(Number(opts.libs), driver)
  const dir = await mkdtemp(path.join(tmpdir(), 'p2prun-fuse-ops-'))
  const mnt = path.join(dir, 'mnt')
  const rows: Array<[string, FsStats]> = []
  try {
    rows.push(['pass-through', await passThrough(w, mnt)])
    for (const mode of opts.modes.split(',')) rows.push([`p2p-${mode}`, await p2prun(w, mnt, mode, dir)])
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  const n = Number(opts.libs)
  console.log(`\nFUSE operations while \`${driver}\` loads ${n} libraries (8 empty directories first on the search path); per library in ()`)
  console.log('method          lookup          (ENOENT)        getattr         open         read       readdir    MB read')
  const cell = (x: number) => `${String(x).padStart(6)} (${(x / n).toFixed(1).padStart(5)})`
  for (const [name, s] of rows) {
    const mb = (s.bytesServedLocal + s.bytesServedAfterFetch) / 1e6
    console.log(`${name.padEnd(13)} ${cell(s.ops.lookup)} ${cell(s.enoent)} ${cell(s.ops.getattr)} ${cell(s.ops.open)} ${cell(s.ops.read)} ${String(s.ops.readdir).padStart(6)} ${mb.toFixed(1).padStart(9)}`)
  }
}

for (const driver of opts.drivers.split(',')) await countFor(driver)
