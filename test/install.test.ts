// p2prun installed as a site would: scripts/install.sh into a prefix, used from anywhere with no
// npm and no source tree on PATH; its Lmod module; the Debian package built from it, installed with
// apt and exercised, then removed.
import { execFile } from 'node:child_process'
import { access, readFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { ROOT } from './helpers/cli.ts'
import { launchDirs, nothingLeft } from './helpers/launch.ts'
import { buildLoadPrograms } from './helpers/load-programs.ts'
import { scratch } from './helpers/scratch.ts'

const run = promisify(execFile)
/** A login shell's bare environment: nothing of this source tree or of npm. */
const bare = (extra: Record<string, string> = {}) => ({ PATH: '/usr/bin:/bin', HOME: '/root', ...extra })

t.test('installed into a prefix: runs from anywhere without npm; its module file and man page work', async (t) => {
  const s = await scratch(t)
  const prefix = path.join(s.dir, 'opt/p2prun')
  await run('bash', [path.join(ROOT, 'scripts/install.sh'), '--prefix', prefix])
  const p2prun = path.join(prefix, 'bin/p2prun')
  t.equal((await run(p2prun, ['--version'], { cwd: '/', env: bare() })).stdout.trim(), JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')).version)
  await t.rejects(access(path.join(prefix, 'lib/p2prun/node_modules')), 'no node_modules: the bundle and Node only')
  const agent = await run(path.join(prefix, 'bin/p2prun-agent'), [], { cwd: '/', env: bare() }).catch((err: { code: number, stderr: string }) => err)
  t.match(agent, { code: 2, stderr: /^p2prun-agent: expected a command: mount DESCRIPTION MOUNTPOINT \(hint: / }, 'the native agent runs from the prefix too')

  // A zero-configuration launch from the installed copy: its rank step, its audit module.
  const dirs = launchDirs(s)
  const programs = await buildLoadPrograms(path.join(s.dir, 'progs'))
  const { stdout } = await run(p2prun, ['--mount-point', `${dirs.mounts}/%j-%n`, '-n', '2', '--launcher', 'local', programs.rpathApp], {
    cwd: s.dir, env: bare({ P2PRUN_RUN_DIR: dirs.run, P2PRUN_STORE_DIR: s.dir, P2PRUN_NODE_PER_RANK: '1' })
  })
  const mapped = [...stdout.matchAll(/^mapped (\S+)$/gm)].map((m) => m[1] as string)
  t.equal(mapped.filter((f) => f.startsWith(`${dirs.mounts}/`) && f.endsWith('/librp.so.1')).length, 2, 'each rank mapped the DT_RPATH library from its mount')
  t.equal(mapped.filter((f) => f === path.join(prefix, 'lib/p2prun/dist/p2prun-audit.so')).length, 2, 'through the installed audit module')
  await nothingLeft(t, s, dirs)

  const lmod = '/usr/share/lmod/lmod/init/bash'
  const loaded = await run('bash', ['-c', `. ${lmod} && module use ${prefix}/share/modulefiles && module load p2prun && command -v p2prun && p2prun --version`], { env: bare() })
  t.match(loaded.stdout, new RegExp(`^${prefix}/bin/p2prun\\n\\d+\\.\\d+\\.\\d+\\n$`), '`module load p2prun` puts it on PATH')
  const man = await run('man', ['-w', 'p2prun'], { env: bare({ MANPATH: path.join(prefix, 'share/man') }) })
  t.equal(man.stdout.trim(), path.join(prefix, 'share/man/man1/p2prun.1'), 'man p2prun finds its page')
})

t.test('the Debian package: apt installs it, the example runs from /usr/bin/p2prun, apt removes it', async (t) => {
  const installed = await run('dpkg-query', ['-W', '-f=${Status}', 'p2prun']).then((r) => r.stdout.includes('install ok installed'), () => false)
  if (installed) {
    t.comment('a p2prun package is already installed on this machine: not replaced by a test')
    return
  }
  const s = await scratch(t)
  const deb = (await run('bash', [path.join(ROOT, 'scripts/package-deb.sh'), s.dir])).stdout.trim()
  t.match(path.basename(deb), /^p2prun_\d+\.\d+\.\d+_\w+\.deb$/)
  const contents = (await run('dpkg-deb', ['--contents', deb])).stdout
  for (const file of ['./usr/bin/p2prun', './usr/bin/p2prun-agent', './usr/lib/p2prun/dist/p2prun-agent', './usr/lib/p2prun/node/bin/node', './usr/lib/p2prun/dist/p2prun-audit.so', './usr/share/man/man1/p2prun.1', './etc/lmod/modules/p2prun']) {
    t.match(contents, new RegExp(` ${file.replaceAll('.', '\\.')}( ->|$)`, 'm'), file)
  }
  t.teardown(() => run('apt-get', ['remove', '-y', '-qq', 'p2prun'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).catch(() => {}))
  await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', deb], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  const dirs = launchDirs(s)
  const example = path.join(s.dir, 'hello')
  await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', example])
  // As a user would, in a login shell: Debian's Lmod finds the module by itself.
  const r = await run('bash', ['-lc', 'cd "$EXAMPLE" && module load p2prun && exec p2prun --mount-point "$MNT/%j-%n" -n 2 --launcher local ./app'], {
    env: bare({ EXAMPLE: example, MNT: dirs.mounts, P2PRUN_RUN_DIR: dirs.run, P2PRUN_STORE_DIR: s.dir, LD_LIBRARY_PATH: path.join(example, 'libs') })
  })
  t.equal(r.stdout.match(/hello, world, from libgreet/g)?.length, 2, 'both ranks ran from the package\'s p2prun')
  t.ok([...r.stdout.matchAll(/^rank \S+ lib (\S+libgreet\S+)$/gm)].every((m) => (m[1] as string).startsWith(`${dirs.mounts}/`)), 'libraries from the mount')
  await run('apt-get', ['remove', '-y', '-qq', 'p2prun'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  await t.rejects(access('/usr/bin/p2prun'), 'removed with apt')
  await nothingLeft(t, s, dirs)
})
