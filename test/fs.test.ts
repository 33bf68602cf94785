// The file system's policy through a real mount of p2prun's FUSE server, over a plain directory: no
// swarm. The mount is served in this process: the server answers on its own thread, and the reads
// it forwards (a directory source has no local view) are answered by this event loop while the
// test's own file calls wait in libuv's thread pool.
import { constants as fsc } from 'node:fs'
import { access, chmod, lstat, open, readdir, readFile, readlink, stat, statfs } from 'node:fs/promises'
import path from 'node:path'
import t, { type Test } from 'tap'
import type { DataMode } from '../lib/config.ts'
import { describeDirectory } from '../lib/describe.ts'
import { LibraryFs } from '../lib/fs.ts'
import { mountFs } from '../lib/mount.ts'
import { DirectorySource, type ByteSource } from '../lib/store.ts'
import type { DescribedEntry } from '../lib/description.ts'
import { bytesFor, LIBRARY_TREE, makeTree } from './helpers/fixtures.ts'
import { ensureUnmounted } from './helpers/mount.ts'
import { scratch } from './helpers/scratch.ts'

interface Over { mode?: DataMode, tree?: (dir: string) => Promise<string>, negativeCacheSeconds?: number, source?: (libs: string) => ByteSource }

async function mountOver (t: Test, over: Over = {}) {
  const s = await scratch(t)
  const libs = await (over.tree ?? ((dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE)))(s.dir)
  const errors: string[] = []
  const fs = new LibraryFs(await describeDirectory(libs), (over.source ?? ((dir) => new DirectorySource(dir)))(libs),
    { mode: over.mode ?? 'block', uid: 1234, gid: 5678, onError: (op, file) => errors.push(`${op} ${file}`) })
  const mnt = path.join(s.dir, 'mnt')
  s.defer(() => ensureUnmounted(mnt))
  const mounted = await mountFs(mnt, fs, {
    fsname: 'p2prun-test', allowOther: false, cacheSeconds: 60, negativeCacheSeconds: over.negativeCacheSeconds ?? 60,
    device: '/dev/fuse', log: (line) => errors.push(line)
  })
  s.defer(() => mounted.unmount())
  return { mnt, libs, errors, stats: () => fs.stats(mounted.counters()) }
}

t.test('stat answers from the description: types, modes without write bits, owner, sizes', async (t) => {
  const { mnt, stats } = await mountOver(t)
  const lib = await stat(path.join(mnt, 'libfoo.so.1.2.3'))
  t.same([lib.mode, lib.uid, lib.gid, lib.size], [0o100555, 1234, 5678, 300_000])
  const dir = await stat(path.join(mnt, 'python'))
  t.same([dir.mode, dir.nlink], [0o040555, 2])
  t.equal((await stat(mnt)).nlink, 5, 'the root: itself, its entry, and ".." of python, share and empty-dir')
  const link = await lstat(path.join(mnt, 'libfoo.so'))
  t.same([link.mode, link.size], [0o120777, 'libfoo.so.1'.length])
  await t.rejects(stat(path.join(mnt, 'libnothere.so')), { code: 'ENOENT' })
  t.equal(stats().enoent, 1)
  t.ok(stats().ops.lookup >= 4, 'the kernel looked each name up')
})

t.test('a failed lookup reaches the server once: the kernel keeps the negative entry', async (t) => {
  for (const [negativeCacheSeconds, want] of [[60, 1], [0, 2]] as const) {
    const { mnt, stats } = await mountOver(t, { negativeCacheSeconds })
    for (let i = 0; i < 2; i++) await t.rejects(stat(path.join(mnt, 'libnothere.so')), { code: 'ENOENT' })
    t.equal(stats().enoent, want, `negative entries cached ${negativeCacheSeconds} s: ${want} failed lookup(s) for two stats`)
  }
})

t.test('readdir, readlink, access, statfs', async (t) => {
  const { mnt } = await mountOver(t)
  t.same(await readdir(path.join(mnt, 'python')), ['__init__.py', 'ext module é.so'], 'in description order')
  await t.rejects(readdir(path.join(mnt, 'libbar.so.2.0')), { code: 'ENOTDIR' })
  t.equal(await readlink(path.join(mnt, 'libfoo.so.1')), 'libfoo.so.1.2.3')
  await t.rejects(readlink(path.join(mnt, 'share')), { code: 'EINVAL' })
  await access(path.join(mnt, 'share/README'), fsc.R_OK)
  await t.rejects(access(path.join(mnt, 'share/README'), fsc.W_OK), { code: 'EROFS' })
  const fs = await statfs(mnt)
  t.same([fs.bfree, fs.bavail, fs.bsize], [0, 0, 4096], 'nothing free')
  t.equal(fs.blocks, Math.ceil((300_000 + 150_001 + 70_000 + 'library set for tests\n'.length) / 4096))
  t.match(await readFile('/proc/self/mounts', 'utf8'), new RegExp(`^p2prun-test ${mnt} fuse\\.p2prun ro,`, 'm'), 'mounted read-only')
})

t.test('open refuses writing; a read copies the right bytes, clipped at the end; forwarded without a local view', async (t) => {
  const { mnt, stats, errors } = await mountOver(t, { mode: 'file' })
  await t.rejects(open(path.join(mnt, 'libbar.so.2.0'), 'r+'), { code: 'EROFS' })
  await t.rejects(open(path.join(mnt, 'libbar.so.2.0'), 'w'), { code: 'EROFS' })
  const fh = await open(path.join(mnt, 'libbar.so.2.0'), 'r')
  const buf = Buffer.alloc(8192)
  const { bytesRead } = await fh.read(buf, 0, 8192, 150_001 - 100)
  await fh.close()
  t.equal(bytesRead, 100, 'a read past the end returns what is left')
  t.ok(buf.subarray(0, 100).equals(bytesFor('libbar.so.2.0', 150_001).subarray(150_001 - 100)))
  const s = stats()
  t.equal(s.opensForwarded, 1, 'file mode: the open asked JS whether the file is complete')
  t.ok(s.readsForwarded >= 1 && s.readsForwarded === s.ops.read, 'a directory source has no local view: every read went to JS')
  t.ok(s.bytesServedLocal >= 100 && s.bytesServedLocal <= 150_001, `${s.bytesServedLocal} bytes read (the kernel reads whole pages)`)
  t.same([s.readErrors, s.bytesServedAfterFetch, errors], [0, 0, []])
})

t.test('block mode: the open of an incomplete file asks for its ends and returns; its reads fetch what they need', async (t) => {
  const asked: string[] = []
  const { mnt, stats } = await mountOver(t, { source: (libs) => Object.assign(new DirectorySource(libs), { fetchEnds: (e: DescribedEntry) => { asked.push(e.path) } }) })
  t.equal((await readFile(path.join(mnt, 'share/README'), 'utf8')), 'library set for tests\n')
  t.same([stats().ops.open, stats().opensForwarded], [1, 1])
  t.same(asked, ['share/README'], 'the source was asked for the file\'s first and last pieces')
})

t.test('modes drop set-uid, set-gid and sticky bits, as fetch does', async (t) => {
  const { mnt } = await mountOver(t, {
    tree: async (dir) => {
      const libs = await makeTree(path.join(dir, 'libs'), { files: { suid: 10, sgid: 10 }, dirs: ['tmp'] })
      await Promise.all([chmod(path.join(libs, 'suid'), 0o4755), chmod(path.join(libs, 'sgid'), 0o2750), chmod(path.join(libs, 'tmp'), 0o1777)])
      return libs
    }
  })
  const modeOf = async (name: string) => (await stat(path.join(mnt, name))).mode
  t.same([await modeOf('suid'), await modeOf('sgid'), await modeOf('tmp')], [0o100555, 0o100550, 0o040555])
})
