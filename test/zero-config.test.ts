// `p2prun -n N ./app` with no --libs: the program's load closure, found by reading ELF the way the
// loader searches, served from the mount, with every lookup — DT_RPATH, DT_RUNPATH with $ORIGIN, an
// absolute dlopen — landing there (the audit module), and the program exec'd from the mount.
import { execFile } from 'node:child_process'
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { loadClosure } from '../lib/load-closure.ts'
import { parseLdCache } from '../lib/ld-cache.ts'
import { programSet } from '../lib/program-set.ts'
import { CLI, cleanEnv, ROOT } from './helpers/cli.ts'
import { launch, launchDirs, nothingLeft } from './helpers/launch.ts'
import { buildLoadPrograms } from './helpers/load-programs.ts'
import { scratch, type Scratch } from './helpers/scratch.ts'

const run = promisify(execFile)

/** An ELF header of another class and machine (32-bit i386), with nothing after it. */
function elf32Header (): Buffer {
  const h = Buffer.alloc(52)
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]).copy(h)
  h.writeUInt16LE(2, 16) // ET_EXEC
  h.writeUInt16LE(3, 18) // EM_386
  return h
}

async function hello (s: Scratch): Promise<{ app: string, libs: string }> {
  const dir = path.join(s.dir, 'hello')
  await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', dir])
  return { app: path.join(dir, 'app'), libs: path.join(dir, 'libs') }
}

t.test('the closure is what the loader would load, found without running the program', async (t) => {
  const s = await scratch(t)
  const { app, libs } = await hello(s)
  const p = await buildLoadPrograms(path.join(s.dir, 'progs'))
  const env = { LD_LIBRARY_PATH: libs }
  const closure = await loadClosure(app, { env, cwd: s.dir })
  const by = new Map(closure.objects.map((o) => [path.basename(o.path), o.foundBy]))
  t.equal(by.get('libgreet.so.1'), 'LD_LIBRARY_PATH')
  t.equal(by.get('libcount.so.2'), 'LD_LIBRARY_PATH')
  t.equal(by.get('libc.so.6'), 'cache')
  t.equal(closure.objects.filter((o) => o.elf.soname === 'libc.so.6').length, 1, 'libc once')
  t.notOk(closure.objects.some((o) => /^ld-linux/.test(path.basename(o.path))), 'the loader is not a library of the closure')

  // A library of another class earlier on the path is skipped, as the loader skips it.
  const wrong = path.join(s.dir, 'wrong-class')
  await mkdir(wrong)
  await writeFile(path.join(wrong, 'libgreet.so.1'), elf32Header())
  const skipped = await loadClosure(app, { env: { LD_LIBRARY_PATH: `${wrong}:${libs}` }, cwd: s.dir })
  t.equal(skipped.objects.find((o) => o.name === 'libgreet.so.1')?.path, path.join(libs, 'libgreet.so.1'))

  const rpath = await loadClosure(p.rpathApp, { env: {}, cwd: s.dir })
  t.same(rpath.objects.filter((o) => o.name === 'librp.so.1').map((o) => [o.path, o.foundBy]), [[path.join(p.rpathLibDir, 'librp.so.1'), 'RPATH']])
  const runpath = await loadClosure(p.runpathApp, { env: {}, cwd: s.dir })
  t.same(runpath.objects.filter((o) => o.name === 'librun.so.1').map((o) => [o.path, o.foundBy]), [[path.join(p.runpathLibDir, 'librun.so.1'), 'RUNPATH']],
    '$ORIGIN is the directory of the program')
  // LD_LIBRARY_PATH comes before DT_RUNPATH but after DT_RPATH.
  const shadow = path.join(s.dir, 'shadow')
  await mkdir(shadow)
  for (const name of ['librp.so.1', 'librun.so.1']) await copyFile(path.join(name === 'librp.so.1' ? p.rpathLibDir : p.runpathLibDir, name), path.join(shadow, name))
  t.equal((await loadClosure(p.rpathApp, { env: { LD_LIBRARY_PATH: shadow }, cwd: s.dir })).objects[1]?.foundBy, 'RPATH')
  t.equal((await loadClosure(p.runpathApp, { env: { LD_LIBRARY_PATH: shadow }, cwd: s.dir })).objects[1]?.foundBy, 'LD_LIBRARY_PATH')
})

t.test('the loader cache is read as ldconfig reads it', async (t) => {
  const cache = parseLdCache(await readFile('/etc/ld.so.cache'))
  const { stdout } = await run('ldconfig', ['-p'])
  const listed = [...stdout.matchAll(/^\s+(\S+) \(([^)]*)\) => (\S+)$/gm)].filter((m) => (m[2] as string).includes('x86-64'))
  t.ok(listed.length > 10, `ldconfig lists ${listed.length} libraries`)
  for (const [, name, , file] of listed) t.ok(cache.get(name as string)?.includes(file as string), `${name} => ${file}`)
  t.same(parseLdCache(Buffer.from('not a cache')), new Map(), 'anything else is no cache')
  t.same(parseLdCache(Buffer.from('glibc-ld.so.cache1.1\xff\xff\xff\xff', 'latin1')), new Map(), 'a truncated cache gives nothing, not a crash')
})

t.test('the policy: system libraries stay local, the rest and the program are served', async (t) => {
  const s = await scratch(t)
  const { app, libs } = await hello(s)
  const env = { LD_LIBRARY_PATH: libs, PATH: process.env.PATH }
  const nonsystem = await programSet(app, 'nonsystem', { env, cwd: s.dir })
  t.same(nonsystem.files, [app, path.join(libs, 'libgreet.so.1'), path.join(libs, 'libcount.so.2')])
  t.same(nonsystem.libDirs, [libs])
  t.ok(nonsystem.choices.some((c) => !c.served && /libc\.so\.6$/.test(c.path) && /a system directory on a local file system/.test(c.why)), 'libc says why not')
  const network = await programSet(app, 'network', { env, cwd: s.dir })
  t.same(network.files, [app], 'nothing here is on a network file system: only the program')
  const all = await programSet(app, 'all', { env, cwd: s.dir })
  t.ok(all.files.some((f) => /libc\.so\.6$/.test(f)), 'all: libc too')
  t.notOk(all.files.some((f) => /ld-linux/.test(f)), 'never the loader itself')
  // A script's loads are its interpreter's.
  const script = path.join(s.dir, 'script.sh')
  await writeFile(script, '#!/usr/bin/env sh\necho hi\n', { mode: 0o755 })
  const viaEnv = await programSet(script, 'nonsystem', { env, cwd: s.dir })
  t.same(viaEnv.files, [script], 'sh is a system program: the script alone is served')
  t.ok(viaEnv.choices.some((c) => /the interpreter of script\.sh/.test(c.why)))
})

t.test('p2prun -n 3 ./app with no --libs: every rank runs the program and maps its libraries from the mount', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const p = await buildLoadPrograms(path.join(s.dir, 'progs'))
  const cases: [string, string[], string, string[]][] = [
    ['DT_RPATH (searched before LD_LIBRARY_PATH)', [p.rpathApp], 'librp.so.1', []],
    ['DT_RUNPATH with $ORIGIN', [p.runpathApp], 'librun.so.1', []],
    // A plugin is no DT_NEEDED: its directory is given, and combines with the closure.
    ['dlopen of an absolute path', [p.dlopenApp, p.plugin], 'libplug.so', ['--libs', 'auto', '--libs', path.dirname(p.plugin)]]
  ]
  for (const [name, program, lib, libs] of cases) {
    const r = await launch(s, dirs, ['-n', '3', '--launcher', 'local', ...libs, ...program], { P2PRUN_NODE_PER_RANK: '1' })
    t.equal(r.exitCode, 0, `${name}: ${r.stderr}`)
    const exes = [...r.stdout.matchAll(/^exe (\S+)$/gm)].map((m) => m[1] as string)
    const libsMapped = [...r.stdout.matchAll(/^mapped (\S+)$/gm)].map((m) => m[1] as string).filter((f) => path.basename(f) === lib)
    t.equal(exes.length, 3, `${name}: three ranks ran`)
    t.ok(exes.every((e) => e.startsWith(`${dirs.mounts}/`) && e.endsWith(program[0] as string)), `${name}: each rank's program ran from a mount: ${exes.join(' ')}`)
    t.equal(libsMapped.length, 3, `${name}: each rank mapped ${lib}`)
    t.ok(libsMapped.every((f) => f.startsWith(`${dirs.mounts}/`)), `${name}: from a mount: ${libsMapped.join(' ')}`)
    t.equal(new Set(libsMapped.map((f) => f.slice(dirs.mounts.length).split('/')[1])).size, 3, `${name}: each from its own node's mount`)
    const audit = path.join(ROOT, 'dist/p2prun-audit.so')
    const others = [...r.stdout.matchAll(/^mapped (\S+)$/gm)].map((m) => m[1] as string).filter((f) => !f.startsWith(`${dirs.mounts}/`))
    t.equal(others.filter((f) => f === audit).length, 3, `${name}: each rank loaded p2prun's audit module`)
    t.ok(others.every((f) => f === audit || /^\/(usr\/)?lib/.test(f)), `${name}: everything else came from the system directories: ${[...new Set(others)].join(' ')}`)
  }
  // With --libs alone the mount is on LD_LIBRARY_PATH only: the launch says which loads bypass it.
  const copy = path.join(s.dir, 'copy')
  await mkdir(copy)
  await copyFile(path.join(p.rpathLibDir, 'librp.so.1'), path.join(copy, 'librp.so.1'))
  const explicit = await launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', copy, p.rpathApp], { P2PRUN_NODE_PER_RANK: '1' })
  t.equal(explicit.exitCode, 0, explicit.stderr)
  t.match(explicit.stderr, new RegExp(`^p2prun: warning: app loads librp\\.so\\.1 from ${p.rpathLibDir}/librp\\.so\\.1 \\(its DT_RPATH, searched before LD_LIBRARY_PATH\\), not from the mount \\(hint: leave out --libs`),
    'the DT_RPATH bypass is named')
  t.ok([...explicit.stdout.matchAll(/^mapped (\S+librp\S+)$/gm)].every((m) => !(m[1] as string).startsWith(dirs.mounts)), 'and it is what happened')
  await nothingLeft(t, s, dirs)
})

t.test('a static program: served and run from the mount, with no loader to audit', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const app = path.join(s.dir, 'static-app')
  await writeFile(path.join(s.dir, 'static.c'), STATIC_APP)
  await run('cc', ['-static', '-O1', '-o', app, path.join(s.dir, 'static.c')])
  const r = await launch(s, dirs, ['-n', '2', '--launcher', 'local', app], { P2PRUN_NODE_PER_RANK: '1' })
  t.equal(r.exitCode, 0, r.stderr)
  t.equal(r.stderr, '', 'nothing to warn about')
  const exes = [...r.stdout.matchAll(/^exe (\S+) audit (\S+)$/gm)]
  t.equal(exes.length, 2, 'both ranks ran')
  t.ok(exes.every((m) => (m[1] as string).startsWith(`${dirs.mounts}/`) && m[2] === 'none'), `from the mount, without LD_AUDIT: ${exes.map((m) => m[0]).join('; ')}`)
  await nothingLeft(t, s, dirs)
})

t.test('a musl program: its closure found as musl\'s loader searches (libc.so is the loader; LD_LIBRARY_PATH before DT_RPATH), its libraries from the mount', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const libs = path.join(s.dir, 'rpath-libs')
  await mkdir(libs)
  await writeFile(path.join(s.dir, 'greet.c'), 'const char *greet(void) { return "musl greet"; }\n')
  await writeFile(path.join(s.dir, 'app.c'), MUSL_APP)
  await run('musl-gcc', ['-shared', '-fPIC', '-o', path.join(libs, 'libmgreet.so'), path.join(s.dir, 'greet.c')])
  const app = path.join(s.dir, 'musl-app')
  await run('musl-gcc', ['-o', app, path.join(s.dir, 'app.c'), `-L${libs}`, '-lmgreet', `-Wl,--disable-new-dtags,-rpath,${libs}`])
  const closure = await loadClosure(app, { env: {}, cwd: s.dir })
  t.same(closure.objects.map((o) => [o.name, o.foundBy]), [['musl-app', 'program'], ['libmgreet.so', 'RPATH']], 'libc.so needs no file: it is the loader')
  const r = await launch(s, dirs, ['-n', '2', '--launcher', 'local', app], { P2PRUN_NODE_PER_RANK: '1' })
  t.equal(r.exitCode, 0, r.stderr)
  t.match(r.stderr, /^p2prun: warning: the program's loader \/lib\/ld-musl-\S+ \(musl\) takes no LD_AUDIT modules: libraries it loads by absolute path \(dlopen\) come from their original place/, 'said once')
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  const mapped = [...r.stdout.matchAll(/^mapped (\S+)$/gm)].map((m) => m[1] as string)
  t.equal(mapped.length, 2, 'both ranks ran')
  t.ok(mapped.every((m) => m.startsWith(`${dirs.mounts}/`) && m.endsWith(`${libs}/libmgreet.so`)),
    `its DT_RPATH library came from the mount (musl searches LD_LIBRARY_PATH first): ${mapped.join(' ')}`)
  await nothingLeft(t, s, dirs)
})

const MUSL_APP = `#include <stdio.h>
#include <string.h>
const char *greet(void);
int main(void) {
  char line[4096];
  FILE *maps = fopen("/proc/self/maps", "r");
  puts(greet());
  while (maps && fgets(line, sizeof line, maps)) {
    char *file = strchr(line, '/');
    if (file && strstr(file, "libmgreet")) { printf("mapped %s", file); break; }
  }
  return 0;
}
`

const STATIC_APP = `#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  exe[n < 0 ? 0 : n] = 0;
  const char *audit = getenv("LD_AUDIT");
  printf("exe %s audit %s\\n", exe, audit ? audit : "none");
  return 0;
}
`

t.test('bad programs and sets: one line each, nothing left', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const { app } = await hello(s)
  const noShebang = path.join(s.dir, 'no-shebang')
  await writeFile(noShebang, 'echo hi\n', { mode: 0o755 })
  const i386 = path.join(s.dir, 'i386-app')
  await writeFile(i386, elf32Header(), { mode: 0o755 })
  const damaged = path.join(s.dir, 'damaged-app')
  await writeFile(damaged, (await readFile(app)).subarray(0, 100))
  await chmod(damaged, 0o755)
  const cases: [string, string[], Record<string, string>, RegExp, number][] = [
    ['not ELF, no #! line', [noShebang], {}, /^p2prun: error: \S+no-shebang is neither an ELF program nor a script with a #! line: p2prun cannot tell what it loads \(hint: add a #! line, or pass --libs DIR\)$/, 1],
    ['32-bit program', [i386], {}, /^p2prun: error: \S+i386-app is a 32-bit x86 \(i386\) program; this host runs 64-bit x86-64 \(hint: /, 1],
    ['damaged ELF', [damaged], {}, /^p2prun: error: \S+damaged-app is a damaged ELF file \(truncated\)/, 1],
    ['a needed library is nowhere', [app], {}, /^p2prun: error: libgreet\.so\.1: cannot open shared object file: No such file or directory \(needed by \S+\/app\)/, 1],
    ['all is local and in system directories', [SYSTEM_PYTHON, '-c', 'pass'], {}, /^p2prun: error: nothing to serve: everything \/usr\/bin\/python3 loads lies in system directories on local file systems \(hint: /, 1],
    ['unknown policy', ['--libs-policy', 'some', app], {}, /^p2prun: error: --libs-policy: expected one of network, nonsystem, all, got "some"/, 1]
  ]
  for (const [name, args, env, pattern, code] of cases) {
    const r = await launch(s, dirs, ['-n', '2', '--launcher', 'local', ...args], env)
    t.equal(r.exitCode, code, `${name}: exit ${code} (${r.stderr})`)
    t.match(r.stderr, pattern, name)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`)
  }
  // A store without room for the set: every node says how much it has and needs.
  const small = path.join(s.dir, 'small-store')
  await mkdir(small)
  await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', small])
  s.defer(() => run('umount', [small]).catch(() => {}))
  const full = await launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', path.dirname(app), app], { P2PRUN_STORE_DIR: small })
  t.not(full.exitCode, 0)
  t.match(full.stderr, /^p2prun rank: error: node \S+: the p2prun agent failed: the store directory \S+small-store has 64\.0 KiB free and the set needs [\d.]+ KiB \(hint: pass --store-dir with room for it/)
  t.equal(full.stderr.trim().split('\n').length, 1, 'one line for the node')
  await run('umount', [small])
  await nothingLeft(t, s, dirs)
})

t.test('--dry-run and describe --for say what is served and why', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const { app, libs } = await hello(s)
  const dry = await launch(s, dirs, ['--dry-run', '-n', '2', '--launcher', 'local', app], { LD_LIBRARY_PATH: libs })
  t.equal(dry.exitCode, 0, dry.stderr)
  t.match(dry.stdout, /^# served \(3\):\n# {3}\S+\/app {2}\(the program: always served, and run from the mount\)\n# {3}\S+\/libgreet\.so\.1 {2}\(needed by app, found through LD_LIBRARY_PATH; outside the system directories\)\n/)
  t.match(dry.stdout, /^# {3}\/lib64\/ld-linux-x86-64\.so\.2 {2}\(the dynamic loader: the kernel maps it by this path\)$/m)
  t.match(dry.stdout, new RegExp(`^eval "\\$\\(\\S+ head --mount-point \\S+ ${app}\\)"$`, 'm'), 'then the commands: the head with no --libs')
  const out = path.join(s.dir, 'app.p2p.torrent')
  const described = await run(CLI, ['describe', '--for', app, '-o', out], { env: cleanEnv({ LD_LIBRARY_PATH: libs }) })
  t.match(described.stdout, /^served \(3\):\n/)
  const inspect = await run(CLI, ['inspect', out])
  t.match(inspect.stdout, new RegExp(`^-rwx\\S+ +\\d+  ${libs.slice(1)}/libgreet\\.so\\.1$`, 'm'), 'each file at its own path in the set')
  await nothingLeft(t, s, dirs)
})

t.test('Python: a venv-like tree\'s packages, an extension module among them, import from the mount', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const venv = path.join(s.dir, 'venv')
  await run(SYSTEM_PYTHON, ['-m', 'venv', '--without-pip', venv])
  const { stdout: site } = await run(path.join(venv, 'bin/python'), ['-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'])
  const packages = site.trim()
  const { stdout: flags } = await run(SYSTEM_PYTHON, ['-c', 'import sysconfig; print(sysconfig.get_paths()["include"], sysconfig.get_config_var("EXT_SUFFIX"))'])
  const [include, suffix] = flags.trim().split(' ') as [string, string]
  await writeFile(path.join(s.dir, 'ext.c'), EXTENSION)
  await run('cc', ['-shared', '-fPIC', `-I${include}`, '-o', path.join(packages, `ext${suffix}`), path.join(s.dir, 'ext.c')])
  await mkdir(path.join(packages, 'purepkg'))
  await writeFile(path.join(packages, 'purepkg/__init__.py'), 'NAME = "purepkg"\n')
  const script = path.join(s.dir, 'app.py')
  await writeFile(script, `#!${venv}/bin/python\n${REPORT_IMPORTS}`, { mode: 0o755 })
  const cases: [string, string[], boolean][] = [
    ['a script whose #! line names the venv\'s python', [script], true],
    ['the venv\'s python itself, given a script', [path.join(venv, 'bin/python'), '-c', REPORT_IMPORTS], false]
  ]
  for (const [name, program, fromMount] of cases) {
    const r = await launch(s, dirs, ['-n', '3', '--launcher', 'local', ...program], { P2PRUN_NODE_PER_RANK: '1' })
    t.equal(r.exitCode, 0, `${name}: ${r.stderr}`)
    for (const what of ['ext', 'purepkg', 'mapped']) {
      const files = [...r.stdout.matchAll(new RegExp(`^${what} (\\S+)$`, 'gm'))].map((m) => m[1] as string)
      t.equal(files.length, 3, `${name}: ${what} in each of three ranks`)
      t.ok(files.every((f) => f.startsWith(`${dirs.mounts}/`) && f.includes(packages)), `${name}: ${what} from a mount: ${files.join(' ')}`)
    }
    const scripts = [...r.stdout.matchAll(/^script (\S+)$/gm)].map((m) => m[1] as string)
    t.ok(scripts.every((f) => f.startsWith(`${dirs.mounts}/`) === fromMount), `${name}: the script ran ${fromMount ? 'from the mount' : 'as given'}: ${scripts.join(' ')}`)
  }
  await nothingLeft(t, s, dirs)
})

/** Debian's own Python, whose headers python3-dev installs (PATH may lead to another). */
const SYSTEM_PYTHON = '/usr/bin/python3'

const EXTENSION = `#include <Python.h>
static struct PyModuleDef def = { PyModuleDef_HEAD_INIT, "ext", NULL, -1, NULL };
PyMODINIT_FUNC PyInit_ext(void) { return PyModule_Create(&def); }
`

// One write of all four lines: the three ranks share one stdout pipe, and with PYTHONUNBUFFERED (set
// on these machines) each print() is a write per piece, which the ranks interleave.
const REPORT_IMPORTS = `import sys, ext, purepkg
mapped = next(l.split()[-1] for l in open("/proc/self/maps") if "/ext." in l)
sys.stdout.write("script %s\\next %s\\npurepkg %s\\nmapped %s\\n" % (sys.argv[0], ext.__file__, purepkg.__file__, mapped))
`
