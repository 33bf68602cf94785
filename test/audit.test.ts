// The LD_AUDIT module on its own, with ld.so: which lookups it sends to the mount. A plain directory
// stands in for the mount (the module sees only paths); each program prints what it mapped. The
// launches through a real mount are in zero-config.test.ts.
import { execFile } from 'node:child_process'
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { buildLoadPrograms, type LoadPrograms } from './helpers/load-programs.ts'
import { scratch } from './helpers/scratch.ts'

const AUDIT = path.resolve(import.meta.dirname, '../dist/p2prun-audit.so')

interface Setting { readonly whole?: readonly string[], readonly some?: readonly string[] }

/** Runs `program` with the module, `mount` and `setting`; the mapped files whose name has `lib` in it. */
function mappedWith (program: readonly string[], mount: string, setting: Setting, lib: string): Promise<string[]> {
  const env = {
    PATH: process.env.PATH,
    LD_AUDIT: AUDIT,
    P2PRUN_AUDIT_MOUNT: mount,
    P2PRUN_AUDIT_WHOLE: (setting.whole ?? []).join(':'),
    P2PRUN_AUDIT_SOME: (setting.some ?? []).join(':')
  }
  return new Promise((resolve, reject) => {
    execFile(program[0] as string, program.slice(1), { env }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${program.join(' ')}: ${stderr || err.message}`))
      else resolve([...stdout.matchAll(/^mapped (\S+)$/gm)].map((m) => m[1] as string).filter((f) => path.basename(f).includes(lib)))
    })
  })
}

/** Copies `file` to its own path under `mount`, as a mount of the closure lays it out. */
async function inMount (mount: string, file: string): Promise<string> {
  const target = path.join(mount, file)
  await mkdir(path.dirname(target), { recursive: true })
  await copyFile(file, target)
  return target
}

t.test('a directory served in part: the mount\'s files go to the mount, the others stay where they lie', async (t) => {
  const s = await scratch(t)
  const p: LoadPrograms = await buildLoadPrograms(path.join(s.dir, 'progs'))
  const mount = path.join(s.dir, 'mnt')
  const rp = path.join(p.rpathLibDir, 'librp.so.1')
  const plugins = path.dirname(p.plugin)

  // Nothing of the directory in the mount yet: its DT_RPATH lookup stays.
  await mkdir(mount)
  t.same(await mappedWith([p.rpathApp], mount, { some: [p.rpathLibDir] }, 'librp'), [rp], 'no such directory in the mount: the original')

  const moved = await inMount(mount, rp)
  t.same(await mappedWith([p.rpathApp], mount, { some: [p.rpathLibDir] }, 'librp'), [moved], 'DT_RPATH: the mount\'s copy')
  t.same(await mappedWith([p.rpathApp], mount, { some: [path.dirname(p.rpathLibDir)] }, 'librp'), [moved],
    'a lookup below the served directory: the mount\'s copy')

  // The mount holds another file of the plugin directory, not the plugin: dlopen by absolute path stays.
  await mkdir(path.join(mount, plugins), { recursive: true })
  await writeFile(path.join(mount, plugins, 'libneighbour.so'), '')
  t.same(await mappedWith([p.dlopenApp, p.plugin], mount, { some: [plugins] }, 'libplug'), [p.plugin], 'a file the mount lacks: the original')
  const plugin = await inMount(mount, p.plugin)
  // Among many names: the module reads the directory's listing once, into a set that grows.
  for (let i = 0; i < 300; i++) await writeFile(path.join(mount, plugins, `libother${i}.so`), '')
  t.same(await mappedWith([p.dlopenApp, p.plugin], mount, { some: [p.rpathLibDir, plugins] }, 'libplug'), [plugin],
    'an absolute dlopen of a file it holds: the mount\'s copy')
})

t.test('a directory served whole: every lookup goes to the mount', async (t) => {
  const s = await scratch(t)
  const p = await buildLoadPrograms(path.join(s.dir, 'progs'))
  const mount = path.join(s.dir, 'mnt')
  const moved = await inMount(mount, path.join(p.rpathLibDir, 'librp.so.1'))
  t.same(await mappedWith([p.rpathApp], mount, { whole: [p.rpathLibDir] }, 'librp'), [moved], 'DT_RPATH: the mount\'s copy')
  // Not in the mount: the loader does not find it there and goes on to the system directories (none).
  await t.rejects(mappedWith([p.dlopenApp, p.plugin], mount, { whole: [path.dirname(p.plugin)] }, 'libplug'), /dlopen failed/,
    'a miss is the mount\'s: the shared file system is not asked')
})
