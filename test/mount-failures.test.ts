// What goes wrong around a mount: no FUSE, a bad mount point, no seeder, a killed agent, --daemon.
import { mkdir, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises'
import { execFile } from 'node:child_process'
import path from 'node:path'
import { execa } from 'execa'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { isMounted } from '../lib/mount.ts'
import { LIBRARY_TREE, makeTree } from './helpers/fixtures.ts'
import { p2prun } from './helpers/cli.ts'
import { job, mountAgent, nodeArgs, ensureUnmounted, waitForStats } from './helpers/mount.ts'

const run = promisify(execFile)
const libraryJob = (t: Test) => job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))

/** Nothing of a failed mount may remain: no mount, no store, no mount point it created. */
async function nothingLeft (t: Test, dir: string, mnt: string) {
  t.equal(await isMounted(mnt), false, 'no mount')
  const left = await readdir(dir)
  t.same(left.filter((n) => n.startsWith('p2prun-')), [], 'no store')
  return left
}

t.test('no FUSE device, or no fusermount: one clear line, nothing left behind', async (t) => {
  const j = await libraryJob(t)
  const mnt = path.join(j.dir, 'mnt')
  const noDevice = await p2prun(['mount', j.file, mnt, ...nodeArgs(j, 'eager'), '--fuse-device', '/nonexistent/fuse'])
  t.equal(noDevice.exitCode, 1)
  t.match(noDevice.stderr, /^p2prun mount: error: FUSE is not available: \/nonexistent\/fuse is missing or not accessible \(ENOENT\) \(hint: load the fuse kernel module/)
  t.equal(noDevice.stderr.trim().split('\n').length, 1)
  t.notOk((await nothingLeft(t, j.dir, mnt)).includes('mnt'), 'mount point not created')

  const noFusermount = await p2prun(['mount', j.file, mnt, ...nodeArgs(j, 'eager')], { env: { PATH: '/nonexistent' } })
  t.equal(noFusermount.exitCode, 1)
  t.match(noFusermount.stderr, /fusermount is not installed.*hint: install it: apt-get install fuse3/)
  await nothingLeft(t, j.dir, mnt)
})

t.test('a mount point that is a file, not empty, or already mounted is refused', async (t) => {
  const j = await libraryJob(t)
  await writeFile(path.join(j.dir, 'afile'), 'x')
  const asFile = await p2prun(['mount', j.file, path.join(j.dir, 'afile'), ...nodeArgs(j, 'eager')])
  t.match(asFile.stderr, /mount point .*afile is not a directory/)
  await mkdir(path.join(j.dir, 'full'))
  await writeFile(path.join(j.dir, 'full/something'), 'x')
  const full = await p2prun(['mount', j.file, path.join(j.dir, 'full'), ...nodeArgs(j, 'eager')])
  t.equal(full.exitCode, 1)
  t.match(full.stderr, /mount point .*full is not empty \(hint: choose an empty directory/)
  const mnt = path.join(j.dir, 'mnt')
  await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), nodeArgs(j, 'eager'))
  const busy = await p2prun(['mount', j.file, mnt, ...nodeArgs(j, 'eager')])
  t.equal(busy.exitCode, 1)
  t.match(busy.stderr, /mount point .*mnt is busy: something is mounted there \(hint: run `p2prun umount/)
  t.equal(await isMounted(mnt), true, 'the first mount is untouched')
})

t.test('seeder unreachable: metadata still works, reads fail with EIO after the stall timeout, unmount is clean', async (t) => {
  const j = await libraryJob(t)
  const mnt = path.join(j.dir, 'mnt')
  const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'),
    ['--mode', 'block', '--seeder', '127.0.0.1:9', '--store-dir', j.dir, '--stall-timeout', '2'])
  t.same((await readdir(mnt)).sort(), (await readdir(j.libs)).sort(), 'listing needs no network')
  const started = performance.now()
  const stuck = readFile(path.join(mnt, 'libbar.so.2.0'))
  // While that read waits on the swarm, other operations are answered at once.
  const others = await Promise.all([stat(path.join(mnt, 'libfoo.so.1.2.3')), readdir(path.join(mnt, 'python')),
    readlink(path.join(mnt, 'libfoo.so'))]).then(() => performance.now() - started)
  await t.rejects(stuck, { code: 'EIO' })
  const waited = (performance.now() - started) / 1000
  t.ok(others < 1000, `stat, readdir and readlink answered in ${others.toFixed(0)} ms during the stuck read`)
  t.ok(waited >= 1.5 && waited < 10, `failed after ${waited.toFixed(1)} s`)
  const { stderr, stats, exitCode } = await agent.stop()
  t.equal(exitCode, 0)
  t.match(stderr, /p2prun mount: read \/libbar\.so\.2\.0 failed: no data arrived for 2 s \(0 peers connected\)/)
  t.ok(stats.fs.readErrors >= 1)
  await nothingLeft(t, j.dir, mnt)
})

t.test('a reader waiting on a swarm with no seeder can be killed (scancel): its read or open is interrupted', async (t) => {
  const j = await libraryJob(t)
  // A direct read is one synchronous FUSE request, which the kernel interrupts (readahead is not);
  // in file mode the open itself waits for the whole file.
  const cases = [
    { mode: 'block', signal: 'SIGKILL', forwarded: 'readsForwarded', command: ['dd', 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct'] },
    { mode: 'file', signal: 'SIGINT', forwarded: 'opensForwarded', command: ['cat'] }
  ] as const
  for (const c of cases) {
    const mnt = path.join(j.dir, `mnt-${c.mode}`)
    const lib = path.join(mnt, 'libbar.so.2.0')
    const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, `stats-${c.mode}.json`),
      ['--mode', c.mode, '--seeder', '127.0.0.1:9', '--store-dir', j.dir, '--stall-timeout', '60'])
    const [command, ...args] = c.command
    const reader = execa(command, [...args, c.mode === 'block' ? `if=${lib}` : lib], { reject: false })
    await waitForStats(agent, (s) => s.fs[c.forwarded] === 1)
    reader.kill(c.signal)
    const r = await reader
    t.equal(r.signal, c.signal, `${c.mode} mode: the reader died of ${c.signal}`)
    const { stats, exitCode } = await agent.stop()
    t.equal(exitCode, 0)
    t.same([stats.fs.interrupted, stats.fs.readErrors], [1, 0], 'interrupted, not failed')
    t.equal(await isMounted(mnt), false)
  }
})

t.test('a killed Node agent leaves a dead mount that `p2prun umount` removes, with its store', async (t) => {
  const j = await libraryJob(t)
  const mnt = path.join(j.dir, 'mnt')
  const runDir = path.join(j.dir, 'run')
  const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), [...nodeArgs(j, 'eager'), '--run-dir', runDir, '--agent', 'node'])
  agent.child.kill('SIGKILL')
  await agent.child
  t.equal(await isMounted(mnt), true, 'the kernel keeps the dead mount')
  t.equal((await readdir(j.dir)).filter((n) => n.startsWith('p2prun-')).length, 1, 'and the store')
  const r = await p2prun(['umount', mnt, '--run-dir', runDir])
  t.equal(r.exitCode, 0, r.stderr)
  await nothingLeft(t, j.dir, mnt)
  t.same(await readdir(runDir), [], 'no agent state')
  const again = await p2prun(['umount', mnt, '--run-dir', runDir])
  t.equal(again.exitCode, 2)
  t.match(again.stderr, /nothing is mounted at/)
})

t.test('--daemon returns once the mount is ready; umount stops the agent; a failing daemon reports why', async (t) => {
  const j = await libraryJob(t)
  const mnt = path.join(j.dir, 'mnt')
  const runDir = path.join(j.dir, 'run')
  const ready = path.join(j.dir, 'ready.json')
  const cache = path.join(j.dir, 'cache')
  const env = { NODE_COMPILE_CACHE: cache }
  j.defer(() => ensureUnmounted(mnt))
  const r = await p2prun(['mount', j.file, mnt, ...nodeArgs(j, 'eager'), '--daemon', '--run-dir', runDir, '--ready-file', ready], { env })
  t.equal(r.exitCode, 0, r.stderr)
  t.equal(await isMounted(mnt), true, 'mounted when --daemon returns')
  const { pid } = JSON.parse(await readFile(ready, 'utf8'))
  t.doesNotThrow(() => process.kill(pid, 0), 'the ready file names the running agent')
  const { stdout } = await run('cat', [path.join(mnt, 'share/README')])
  t.equal(stdout, 'library set for tests\n')
  const stop = await p2prun(['umount', mnt, '--run-dir', runDir], { env })
  t.equal(stop.exitCode, 0, stop.stderr)
  await nothingLeft(t, j.dir, mnt)
  t.notOk((await readdir(j.dir)).includes('ready.json'), 'ready file removed')
  // umount ends before the agent it stops (as in a Slurm epilog): its code cache is its own, not the agents'.
  t.same((await readdir(cache)).filter((n) => n.endsWith('.v8')).map((n) => n.replace(/^p2prun-[0-9a-f]+-/, '')).sort(), ['mount.v8', 'umount.v8'],
    'the agent and umount each saved the code cache of their kind')

  const failing = await p2prun(['mount', j.file, mnt, ...nodeArgs(j, 'eager'), '--daemon', '--run-dir', runDir, '--fuse-device', '/nonexistent'])
  t.equal(failing.exitCode, 1)
  t.match(failing.stderr, /^p2prun mount: error: FUSE is not available: \/nonexistent is missing/)
  t.equal(failing.stderr.trim().split('\n').length, 1)
})
