// The CLI as users meet it: help, version, one-line errors and exit codes.
import { createHash, randomBytes } from 'node:crypto'
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t, { type Test } from 'tap'
import { VERSION } from '../lib/version.ts'
import { LIBRARY_TREE, makeTree, withSymlinks } from './helpers/fixtures.ts'
import { p2prun, ROOT, serve } from './helpers/cli.ts'

const oneLine = (t: Test, stderr: string) => t.equal(stderr.trim().split('\n').length, 1, `one line: ${stderr}`)

t.test('--help lists the subcommands, --version prints the version', async (t) => {
  const help = await p2prun(['--help'])
  t.equal(help.exitCode, 0)
  for (const cmd of ['describe', 'inspect', 'serve', 'fetch']) t.match(help.stdout, new RegExp(`^  ${cmd}`, 'm'))
  const version = await p2prun(['--version'])
  t.equal(version.stdout.trim(), VERSION)
  const sub = await p2prun(['serve', '--help'])
  t.match(sub.stdout, /--tracker-announce-peers <value>/)
})

t.test('bad flags and missing arguments are usage errors: one line, exit 2', async (t) => {
  const cases: [string[], string][] = [
    [['describe', '.', '--bogus'], "p2prun describe: error: unknown option '--bogus' (hint: see `p2prun describe --help`)"],
    [['inspect'], "p2prun inspect: error: missing required argument 'file' (hint: see `p2prun inspect --help`)"],
    [['serve', 'x.torrent'], 'p2prun serve: error: give a description and its source, or --sets alone (hint: p2prun serve FILE --source DIR, or p2prun serve --sets DIR)'],
    [['umount'], "p2prun umount: error: missing required argument 'mountpoint' (hint: see `p2prun umount --help`)"]
  ]
  for (const [args, line] of cases) {
    const r = await p2prun(args)
    t.equal(r.exitCode, 2, `${args.join(' ')}: exit 2`)
    t.equal(r.stderr, line)
  }
  const cmd = await p2prun(['frobnicate'])
  t.equal(cmd.exitCode, 2, 'not a command: a program to launch, which is nowhere')
  t.match(cmd.stderr, /^p2prun: error: program frobnicate not found \(hint: give its path, or put it on PATH\)$/)
  const none = await p2prun([])
  t.equal(none.exitCode, 2, 'no command: the help, on stderr')
  t.match(none.stderr, /^Usage: p2prun /)
})

t.test('describe then inspect; a missing directory or description is one line, exit 1 or 2', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const out = path.join(dir, 'job.p2p.torrent')
  const made = await p2prun(['describe', libs, '-o', out])
  t.equal(made.exitCode, 0, made.stderr)
  const [infoHash, summary] = made.stdout.split('\n')
  t.match(infoHash, /^[0-9a-f]{40}$/)
  t.equal(summary, '5 files, 3 directories, 3 symlinks, 507.8 KiB in 8 pieces of 64.0 KiB')
  const shown = await p2prun(['inspect', out])
  t.match(shown.stdout, new RegExp(`^infohash   ${infoHash}$`, 'm'))
  t.match(shown.stdout, /^lrwxrwxrwx\s+0  libfoo\.so -> libfoo\.so\.1$/m)
  t.match(shown.stdout, /^-rwxr-xr-x\s+300000  libfoo\.so\.1\.2\.3$/m)
  const json = JSON.parse((await p2prun(['inspect', out, '--json'])).stdout)
  t.equal(json.infoHash, infoHash)
  t.equal(json.entries.length, 12)

  const gone = await p2prun(['describe', path.join(dir, 'nope'), '-o', path.join(dir, 'x.torrent')])
  t.equal(gone.exitCode, 1)
  t.match(gone.stderr, /^p2prun describe: error: library directory .*nope does not exist \(hint: /)
  oneLine(t, gone.stderr)
  const noFile = await p2prun(['inspect', path.join(dir, 'nope.torrent')])
  t.equal(noFile.exitCode, 2)
  t.match(noFile.stderr, /cannot read description .*nope\.torrent: no such file/)
  oneLine(t, noFile.stderr)
})

t.test('inspect refuses truncated, tampered and foreign files with one line', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const good = path.join(dir, 'good.torrent')
  t.equal((await p2prun(['describe', libs, '-o', good])).exitCode, 0)
  const bytes = await readFile(good)
  const cases: Record<string, Buffer> = {
    truncated: bytes.subarray(0, Math.floor(bytes.length / 2)),
    tampered: Buffer.from(bytes.toString('latin1').replace('1:mi493e', '1:mi511e'), 'latin1'),
    garbage: Buffer.from('\x00\x01not a torrent at all'),
    empty: Buffer.alloc(0)
  }
  for (const [name, content] of Object.entries(cases)) {
    const file = path.join(dir, `${name}.torrent`)
    await writeFile(file, content)
    const r = await p2prun(['inspect', file])
    t.equal(r.exitCode, 1, name)
    t.match(r.stderr, new RegExp(`^p2prun inspect: error: .*${name}\\.torrent (is|has)`), name)
    t.notMatch(r.stderr, /at .*\.ts:\d+/, `${name}: no stack trace`)
    oneLine(t, r.stderr)
  }
})

t.test('inspect shows set-id and sticky bits as ls -l does; fetch, even as root, drops them', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), { files: { 'suid': 1000, 'suid-noexec': 10, 'sgid': 10 }, dirs: ['tmp'] })
  const modes: Record<string, number> = { 'suid': 0o4755, 'suid-noexec': 0o4644, 'sgid': 0o2751, 'tmp': 0o1777 }
  for (const [name, mode] of Object.entries(modes)) await chmod(path.join(libs, name), mode)
  const desc = path.join(dir, 'job.p2p.torrent')
  t.equal((await p2prun(['describe', libs, '-o', desc])).exitCode, 0)
  const shown = (await p2prun(['inspect', desc])).stdout
  t.match(shown, /^-rwsr-xr-x\s+1000  suid$/m)
  t.match(shown, /^-rwSr--r--\s+10  suid-noexec$/m)
  t.match(shown, /^-rwxr-s--x\s+10  sgid$/m)
  t.match(shown, /^drwxrwxrwt\s+0  tmp$/m)

  const head = await serve(desc, libs)
  t.teardown(head.stop)
  const out = path.join(dir, 'out')
  const fetched = await p2prun(['fetch', desc, '--out', out, '--seeder', head.seeder, '--store-dir', dir, '--stall-timeout', '20'])
  t.equal(fetched.exitCode, 0, fetched.stderr)
  const got: Record<string, number> = {}
  for (const name of Object.keys(modes)) got[name] = (await stat(path.join(out, name))).mode & 0o7777
  t.same(got, { 'suid': 0o755, 'suid-noexec': 0o644, 'sgid': 0o751, 'tmp': 0o777 })
})

t.test('a hand-built description with a link out of the set: inspect, mount and fetch refuse it, leave nothing', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const good = path.join(dir, 'good.p2p.torrent')
  t.equal((await p2prun(['describe', libs, '-o', good])).exitCode, 0)
  const forged = path.join(dir, 'forged.p2p.torrent')
  await writeFile(forged, withSymlinks(await readFile(good), { 'python/passwd': '../../../../etc/passwd' }))
  const refusal = `error: ${forged} has symlink "python/passwd" -> "../../../../etc/passwd" that can point outside the set: ` +
    'its target climbs above the top directory (hint: `p2prun describe` never writes such a link, so this description was ' +
    'made or edited by hand: describe the directory again (--follow-symlinks copies such targets in))'
  const inspect = await p2prun(['inspect', forged])
  t.same([inspect.exitCode, inspect.stderr], [1, `p2prun inspect: ${refusal}`])

  // A FUSE device that does not exist: were the description accepted, no mount could be left either.
  const env = { P2PRUN_RUN_DIR: path.join(dir, 'run'), P2PRUN_STORE_DIR: dir, P2PRUN_FUSE_DEVICE: '/nonexistent/fuse' }
  const mount = await p2prun(['mount', forged, path.join(dir, 'mnt')], { env })
  t.same([mount.exitCode, mount.stderr], [1, `p2prun mount: ${refusal}`])
  const fetch = await p2prun(['fetch', forged, '--out', path.join(dir, 'out'), '--stall-timeout', '2'], { env })
  t.same([fetch.exitCode, fetch.stderr], [1, `p2prun fetch: ${refusal}`])
  t.same((await readdir(dir)).sort(), ['forged.p2p.torrent', 'good.p2p.torrent', 'libs'], 'no mount point, output, store or state')
})

t.test('a bad -n is refused before anything is described or started, naming no internal command', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const env = { P2PRUN_RUN_DIR: path.join(dir, 'run'), P2PRUN_STORE_DIR: dir }
  for (const [option, value] of [['-n', 'abc'], ['-np', '0']] as const) {
    const r = await p2prun([option, value, '--launcher', 'local', '--libs', libs, 'true'], { env })
    t.equal(r.exitCode, 2)
    t.equal(r.stderr, `p2prun: error: ${option} expects a positive whole number, got "${value}" (hint: for example ${option} 4)`)
  }
  t.same(await readdir(dir), ['libs'], 'no run dir, store or state: nothing started')
})

t.test('control characters from P2PRUN_JOB and from paths are escaped in error messages', async (t) => {
  const dir = t.testdir()
  const hostile = Buffer.from('\x1b]0;owned\x07').toString('base64url')
  const job = await p2prun(['rank-prepare', '--pid', String(process.pid), '--', 'true'], { env: { P2PRUN_JOB: hostile } })
  t.equal(job.exitCode, 2)
  t.match(job.stderr, /^p2prun rank: error: P2PRUN_JOB is corrupt \(.*\\x1b\]0;owned\\x07/)
  const libs = path.join(dir, 'li\x1b[2Jbs\nx')
  const described = await p2prun(['describe', libs])
  t.equal(described.exitCode, 1)
  t.match(described.stderr, /^p2prun describe: error: library directory \S+\/li\\x1b\[2Jbs\\x0ax does not exist \(hint: /)
  const launched = await p2prun(['-n', '1', '--launcher', 'local', '--libs', libs, 'true'], { env: { P2PRUN_RUN_DIR: path.join(dir, 'run') } })
  t.equal(launched.exitCode, 1)
  t.match(launched.stderr, /^p2prun: error: library directory \S+\/li\\x1b\[2Jbs\\x0ax does not exist/)
  for (const r of [job, described, launched]) t.notMatch(r.stderr, /\p{Cc}/u, 'no control character, not even a newline')
})

t.test('settings: flag over P2PRUN_* over p2prun.yaml; bad values are one-line errors', async (t) => {
  const dir = t.testdir({ 'p2prun.yaml': 'stall-timeout: abc\n' })
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const desc = path.join(dir, 'job.p2p.torrent')
  await p2prun(['describe', libs, '-o', desc])
  const yamlBad = await p2prun(['fetch', desc, '--out', path.join(dir, 'o')], { cwd: dir })
  t.equal(yamlBad.exitCode, 1)
  t.match(yamlBad.stderr, /stall-timeout in .*p2prun\.yaml: expected a number of seconds, got "abc"/)
  const envBad = await p2prun(['fetch', desc, '--out', path.join(dir, 'o'), '--stall-timeout', '5'], { cwd: dir, env: { P2PRUN_MAX_CONNS: '-3' } })
  t.match(envBad.stderr, /P2PRUN_MAX_CONNS: -3 is out of range/)
  await writeFile(path.join(dir, 'p2prun.yaml'), 'colour: blue\n')
  const unknown = await p2prun(['fetch', desc, '--out', path.join(dir, 'o')], { cwd: dir })
  t.match(unknown.stderr, /unknown setting "colour" in .*p2prun\.yaml \(hint: known settings: host, /)
})

t.test('bin/p2prun runs the bundle built from the current sources', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const desc = path.join(dir, 'job.p2p.torrent')
  t.equal((await p2prun(['describe', libs, '-o', desc])).exitCode, 0)
  const head = await serve(desc, libs)
  t.teardown(head.stop)
  const cmdline = (await readFile(`/proc/${head.child.pid}/cmdline`, 'utf8')).split('\0')
  t.equal(cmdline[1], path.join(ROOT, 'dist/cli.mjs'), 'dist/ is stale or missing: run `npm run build`')
})

t.test('the bundle\'s code cache: saved by a command that ran, taken by the next; a damaged one, another build\'s, or a directory others can write to, not used', async (t) => {
  const dir = t.testdir()
  const cache = path.join(dir, 'cache')
  const env = { NODE_COMPILE_CACHE: cache }
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const desc = path.join(dir, 'job.p2p.torrent')
  const cached = async () => (await readdir(cache).catch(() => [])).filter((n) => n.endsWith('.v8')).sort()
  const whole = (bytes: Buffer) => createHash('sha256').update(bytes.subarray(32)).digest().equals(bytes.subarray(0, 32))
  t.equal((await p2prun(['--version'], { env })).exitCode, 0)
  t.not((await p2prun(['inspect', path.join(dir, 'missing.p2p.torrent')], { env })).exitCode, 0)
  t.same(await cached(), [], 'the version, or a command that failed, saves no cache')
  t.equal((await p2prun(['describe', libs, '-o', desc], { env })).exitCode, 0)
  const [name] = await cached()
  t.match(name, /^p2prun-[0-9a-f]{16}-cli\.v8$/, 'a command that ran saves the cache of its kind')
  const file = path.join(cache, name as string)
  const bytes = await readFile(file)
  t.ok(whole(bytes), 'headed by its digest')
  t.equal((await p2prun(['inspect', desc], { env })).exitCode, 0)
  t.same(await readFile(file), bytes, 'the next run takes it and leaves it')

  const damaged = Buffer.concat([bytes.subarray(0, 32), randomBytes(bytes.length - 32)])
  await writeFile(file, damaged)
  const other = path.join(cache, 'p2prun-0123456789abcdef-cli.v8')
  await writeFile(other, 'an older build\'s cache')
  const r = await p2prun(['inspect', desc], { env })
  t.equal(r.exitCode, 0, `a damaged cache is no cache: ${r.stderr}`)
  const again = await readFile(file)
  t.ok(whole(again) && !again.equals(damaged), 'and a whole one replaced it')
  t.same(await cached(), [name], 'another build\'s cache of the same kind was removed')

  const open = path.join(dir, 'open')
  await mkdir(open)
  await chmod(open, 0o777)
  t.equal((await p2prun(['describe', libs, '-o', desc], { env: { NODE_COMPILE_CACHE: open } })).exitCode, 0)
  t.same((await readdir(open)).filter((n) => n.startsWith('p2prun-')), [], 'nothing is cached where others can write')
})

t.test('inspect prints names and link targets with control characters escaped', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), { files: { 'lib\x1b[31mred.so': 10, 'new\nline.so': 10 }, symlinks: { 'bell.so': 'new\nline.so' } })
  const desc = path.join(dir, 'job.p2p.torrent')
  t.equal((await p2prun(['describe', libs, '-o', desc])).exitCode, 0)
  const shown = String((await p2prun(['inspect', desc])).stdout)
  t.notOk(/[\x00-\x09\x0b-\x1f\x7f]/.test(shown), 'no control character but the line ends')
  t.match(shown, /  lib\\x1b\[31mred\.so$/m)
  t.match(shown, /  new\\x0aline\.so$/m)
  t.match(shown, /  bell\.so -> new\\x0aline\.so$/m)
})

t.test('p2prun help [COMMAND] prints help, never launches a program named help', async (t) => {
  const top = await p2prun(['help'])
  t.equal(top.exitCode, 0)
  t.match(top.stdout, /^Usage: p2prun \[options\] \[launcher options\] PROGRAM/)
  const run = await p2prun(['help', 'run'])
  t.equal(run.exitCode, 0, 'the launch is the default action: its usage is the top-level help')
  t.equal(run.stdout, top.stdout)
  const mount = await p2prun(['help', 'umount'])
  t.equal(mount.exitCode, 0)
  t.match(mount.stdout, /^Usage: p2prun umount \[options\] <mountpoint>/)
  const unknown = await p2prun(['help', 'frobnicate'])
  t.equal(unknown.exitCode, 2)
  t.equal(unknown.stderr, 'p2prun help: error: no command "frobnicate" (hint: see `p2prun --help` for the commands)')
})
