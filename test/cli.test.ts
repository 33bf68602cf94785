// The CLI as users meet it: help, version, one-line errors and exit codes.
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t, { type Test } from 'tap'
import { VERSION } from '../lib/version.ts'
import { LIBRARY_TREE, makeTree } from './helpers/fixtures.ts'
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

t.test('bad flags and missing arguments exit non-zero with a short message', async (t) => {
  const flag = await p2prun(['describe', '.', '--bogus'])
  t.not(flag.exitCode, 0)
  t.match(flag.stderr, /unknown option '--bogus'/)
  const missing = await p2prun(['inspect'])
  t.not(missing.exitCode, 0)
  t.match(missing.stderr, /missing required argument 'file'/)
  const serve = await p2prun(['serve', 'x.torrent'])
  t.not(serve.exitCode, 0)
  t.match(serve.stderr, /required option '--source <dir>' not specified/)
  const cmd = await p2prun(['frobnicate'])
  t.not(cmd.exitCode, 0)
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
