// Real FUSE mounts served by `p2prun mount` child processes, fed by a real seeder over loopback.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { access, mkdir, open, readdir, readFile, rename, rmdir, stat, symlink, unlink, writeFile, chmod } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { LIBRARY_TREE, makeTree, snapshotTree } from './helpers/fixtures.ts'
import { ROOT } from './helpers/cli.ts'
import { job, mountAgent, nodeArgs, waitForStats } from './helpers/mount.ts'
import { isMounted } from '../lib/mount.ts'

const run = promisify(execFile)

for (const mode of ['block', 'file', 'eager']) {
  t.test(`${mode} mode: every file, link and directory equals the source`, async (t) => {
    const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
    const mnt = path.join(j.dir, 'mnt')
    const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), nodeArgs(j, mode))
    t.same(await snapshotTree(mnt, 0o555), await snapshotTree(j.libs, 0o555), 'tree, modes (read-only), contents, links')
    t.same((await readdir(mnt)).sort(), (await readdir(j.libs)).sort(), 'top-level listing')
    t.equal(await readFile(path.join(mnt, 'libfoo.so'), 'utf8').then((s) => s.length > 0), true, 'symlink chain resolves')
    t.equal((await stat(path.join(mnt, 'libfoo.so.1.2.3'))).mode & 0o777, 0o555, 'executables keep their x bits')
    t.equal((await stat(path.join(mnt, 'libfoo.so.1.2.3'))).uid, process.getuid?.(), 'owned by the mounting user')
    await t.rejects(stat(path.join(mnt, 'libnothere.so')), { code: 'ENOENT' })
    await t.rejects(stat(path.join(mnt, 'python/nothere/x')), { code: 'ENOENT' })
    const { stats, exitCode } = await agent.stop()
    t.equal(exitCode, 0)
    t.equal(stats.fs.readErrors, 0)
    t.ok(stats.fs.ops.lookup > 0 && stats.fs.ops.open > 0 && stats.fs.ops.read > 0, 'ops are counted')
    t.equal(await isMounted(mnt), false, 'unmounted')
    t.same((await readdir(j.dir)).filter((n) => n.startsWith('p2prun-')), [], 'store removed')
  })
}

t.test('once the set is local, the FUSE server serves reads from the store itself: none reaches JS', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const mnt = path.join(j.dir, 'mnt')
  const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), nodeArgs(j, 'eager'))
  await waitForStats(agent, (s) => s.swarm.piecesHave === s.swarm.pieceCount)
  t.same(await snapshotTree(mnt, 0o555), await snapshotTree(j.libs, 0o555), 'the right bytes')
  const { stats } = await agent.stop()
  t.ok(stats.fs.ops.read > 0, `${stats.fs.ops.read} reads`)
  t.same([stats.fs.readsForwarded, stats.fs.opensForwarded, stats.fs.bytesServedAfterFetch], [0, 0, 0], 'no read or open went to JS')
  // As root the native agent has the kernel read the files of 64 KiB or more from the store itself
  // (FUSE passthrough): the server reads the rest.
  const large = process.getuid?.() === 0 ? [300_000, 150_001, 70_000] : []
  t.equal(stats.fs.passthroughOpens, large.length, `${large.length} opens in passthrough`)
  t.equal(stats.fs.bytesServedLocal + large.reduce((a, b) => a + b, 0), 300_000 + 150_001 + 70_000 + 'library set for tests\n'.length, 'each file read once, from the store')
})

t.test('--owner sets who owns the mounted files', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const mnt = path.join(j.dir, 'mnt')
  await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), [...nodeArgs(j, 'block'), '--owner', '4321:8765'])
  for (const name of ['libfoo.so.1.2.3', 'python', '']) {
    const st = await stat(path.join(mnt, name))
    t.same([st.uid, st.gid], [4321, 8765], `${name || 'the root'} is owned by 4321:8765`)
  }
})

t.test('writes of every kind fail with EROFS', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const mnt = path.join(j.dir, 'mnt')
  await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), nodeArgs(j, 'block'))
  const lib = path.join(mnt, 'libbar.so.2.0')
  const attempts: Record<string, () => Promise<unknown>> = {
    create: () => writeFile(path.join(mnt, 'new.so'), 'x'),
    'open for writing': () => open(lib, 'r+'),
    truncate: () => open(lib, 'w'),
    unlink: () => unlink(lib),
    rename: () => rename(lib, path.join(mnt, 'other.so')),
    mkdir: () => mkdir(path.join(mnt, 'newdir')),
    rmdir: () => rmdir(path.join(mnt, 'empty-dir')),
    symlink: () => symlink('x', path.join(mnt, 'link')),
    chmod: () => chmod(lib, 0o777),
    'write access': () => access(lib, 2)
  }
  // Each is the kernel's answer from a read-only mount (rm without recursive would be refused by
  // Node itself, EISDIR, before the FS is asked: rmdir asks it).
  for (const [name, attempt] of Object.entries(attempts)) {
    await t.rejects(attempt(), { code: 'EROFS' }, name)
  }
})

t.test('a program linked against the mounted libraries runs, dlopens by name, and Python ctypes loads them', async (t) => {
  const j = await job(t, async (dir) => {
    await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', path.join(dir, 'hello')])
    return path.join(dir, 'hello/libs')
  })
  const mnt = path.join(j.dir, 'mnt')
  await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), nodeArgs(j, 'eager'))
  // Directories that do not have the libraries come first, as on real systems: failed lookups.
  const env = { ...process.env, LD_LIBRARY_PATH: `${j.dir}/nothing-here:${mnt}/missing:${mnt}` }
  const app = await run(path.join(j.dir, 'hello/app'), [], { env })
  t.match(app.stdout, /hello, world, from libgreet; count 262150; plugin loaded/)
  for (const lib of ['libgreet.so.1', 'libcount.so.2', 'libplugin.so']) {
    t.match(app.stdout, new RegExp(`lib ${mnt}/${lib.replaceAll('.', '\\.')}\\n`), `${lib} came from the mount`)
  }
  const py = await run('python3', ['-c', [
    'import ctypes',
    'lib = ctypes.CDLL("libcount.so.2")',
    'print(lib.count_bytes())',
    'print(any(l.rstrip().endswith("/libcount.so.2.1.0") and "' + mnt + '" in l for l in open("/proc/self/maps")))'
  ].join('; ')], { env })
  t.same(py.stdout.trim().split('\n'), ['262150', 'True'])
})

t.test('block mode: reading 4 KiB in the middle of a large file fetches a few pieces, not the file', async (t) => {
  const size = 48 * 1024 * 1024
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    await writeFile(path.join(dir, 'libs/libbig.so'), randomBytes(size))
    return path.join(dir, 'libs')
  })
  const mnt = path.join(j.dir, 'mnt')
  const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), nodeArgs(j, 'block'))
  const offset = 20 * 1024 * 1024 + 1000
  const fh = await open(path.join(mnt, 'libbig.so'), 'r')
  const got = Buffer.alloc(4096)
  await fh.read(got, 0, 4096, offset)
  await fh.close()
  const want = Buffer.alloc(4096)
  const src = await open(path.join(j.libs, 'libbig.so'), 'r')
  await src.read(want, 0, 4096, offset)
  await src.close()
  t.ok(got.equals(want), 'the right bytes')
  // Eight programs reading the same page elsewhere in the file at once: one fetch of its piece.
  const other = 33 * 1024 * 1024
  const readers = await Promise.all(Array.from({ length: 8 }, async () => {
    const h = await open(path.join(mnt, 'libbig.so'), 'r')
    const b = Buffer.alloc(4096)
    await h.read(b, 0, 4096, other)
    await h.close()
    return b
  }))
  t.ok(readers.every((b) => b.equals(readers[0] as Buffer)), 'all readers got the same bytes')
  const { stats } = await agent.stop()
  const fetched = stats.swarm.fromHead + stats.swarm.fromPeers
  t.ok(fetched > 0 && fetched <= 4 * 128 * 1024, `fetched ${fetched} bytes of a ${size}-byte file for two 4 KiB reads and 8 concurrent readers`)
  // The reads waited in JS for their pieces; the FUSE server answered them from the store after.
  t.ok(stats.fs.readsForwarded >= 2 && stats.fs.bytesServedAfterFetch >= 2 * 4096, `${stats.fs.readsForwarded} reads forwarded, ${stats.fs.bytesServedAfterFetch} bytes answered once fetched`)
  t.equal(stats.fs.readErrors, 0)
})

t.test('nodes in their own mount namespaces on one host keep their mounts while another node leaves', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  // The agents create the mount point (it does not exist yet), so each would remove it at exit.
  const mnt = path.join(j.dir, 'not-yet/mnt')
  const privateNs = ['unshare', '--mount', '--propagation', 'private']
  const agents = []
  for (const k of [1, 2]) {
    agents.push(await mountAgent(j, j.file, mnt, path.join(j.dir, `stats${k}.json`), [...nodeArgs(j, 'block'), '--node-name', `n${k}`], {}, privateNs))
  }
  const [first, second] = agents as [typeof agents[0], typeof agents[0]]
  const inNs = (pid: number | undefined, ...cmd: string[]) => run('nsenter', [`--mount=/proc/${pid}/ns/mnt`, ...cmd], { encoding: 'buffer' })
  t.equal(await isMounted(mnt), false, 'neither mount is seen from the test\'s namespace')
  t.equal((await first.stop()).exitCode, 0)
  const want = await readFile(path.join(j.libs, 'libfoo.so.1.2.3'))
  const got = await inNs(second.child.pid, 'cat', path.join(mnt, 'libfoo.so.1.2.3'))
  t.ok(got.stdout.equals(want), 'the second node still reads its libraries after the first node unmounted')
  t.equal((await second.stop()).exitCode, 0)
  await t.rejects(stat(mnt), { code: 'ENOENT' }, 'the last node to leave removed the mount point')
  await t.rejects(stat(path.dirname(mnt)), { code: 'ENOENT' }, 'and the parent directory p2prun made for it')
  t.ok((await stat(j.dir)).isDirectory(), 'but nothing it did not make')
})

t.test('two mounts of one description share the swarm: the second gets most bytes from the first', async (t) => {
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    await writeFile(path.join(dir, 'libs/liba.so'), randomBytes(6_000_000))
    await writeFile(path.join(dir, 'libs/libb.so'), randomBytes(4_000_000))
    return path.join(dir, 'libs')
  }, ['--upload-limit', String(1024 * 1024)])
  const first = await mountAgent(j, j.file, path.join(j.dir, 'node1'), path.join(j.dir, 'stats1.json'), nodeArgs(j, 'eager'))
  await run('cat', [path.join(first.mountPoint, 'liba.so'), path.join(first.mountPoint, 'libb.so')], { encoding: 'buffer', maxBuffer: 1e8 })
  const second = await mountAgent(j, j.file, path.join(j.dir, 'node2'), path.join(j.dir, 'stats2.json'), nodeArgs(j, 'eager'))
  t.same(await snapshotTree(second.mountPoint), await snapshotTree(first.mountPoint), 'same bytes on both nodes')
  const { stats } = await second.stop()
  t.ok(stats.swarm.fromPeers > 2 * stats.swarm.fromHead,
    `node 2: ${stats.swarm.fromPeers} bytes from node 1, ${stats.swarm.fromHead} from the head`)
})
