// The file system's operations called directly, over a plain directory: no mount, no swarm.
import { constants as fsc } from 'node:fs'
import { chmod } from 'node:fs/promises'
import { constants } from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { describeDirectory } from '../lib/describe.ts'
import { LibraryFs } from '../lib/fs.ts'
import { DirectorySource } from '../lib/store.ts'
import { bytesFor, LIBRARY_TREE, makeTree } from './helpers/fixtures.ts'

const E = constants.errno

async function fsOver (t: Test, mode: 'block' | 'file' | 'eager' = 'block', tree?: string) {
  const libs = tree ?? await makeTree(path.join(t.testdir(), 'libs'), LIBRARY_TREE)
  const errors: string[] = []
  const fs = new LibraryFs(await describeDirectory(libs), new DirectorySource(libs),
    { mode, uid: 1234, gid: 5678, onError: (op, file) => errors.push(`${op} ${file}`) })
  const ops = fs.operations() as unknown as Record<string, (...args: unknown[]) => void>
  const call = <T>(name: string, ...args: unknown[]) => new Promise<[number, T]>((resolve) => ops[name]?.(...args, (err: number, value: T) => resolve([err, value])))
  return { fs, call, errors }
}

t.test('getattr answers from the description: types, modes without write bits, owner, sizes', async (t) => {
  const { call, fs } = await fsOver(t)
  const [err, lib] = await call<{ mode: number, uid: number, gid: number, size: number }>('getattr', '/libfoo.so.1.2.3')
  t.equal(err, 0)
  t.same([lib.mode, lib.uid, lib.gid, lib.size], [0o100555, 1234, 5678, 300_000])
  const [, dir] = await call<{ mode: number, nlink: number }>('getattr', '/python')
  t.same([dir.mode, dir.nlink], [0o040555, 2])
  const [, link] = await call<{ mode: number, size: number }>('getattr', '/libfoo.so')
  t.same([link.mode, link.size], [0o120777, 'libfoo.so.1'.length])
  t.same(await call('getattr', '/libnothere.so'), [-E.ENOENT, undefined])
  t.equal(fs.stats.enoent, 1)
  t.equal(fs.stats.ops.getattr, 4)
})

t.test('readdir, readlink, access, statfs', async (t) => {
  const { call } = await fsOver(t)
  t.same(await call('readdir', '/python'), [0, ['.', '..', '__init__.py', 'ext module é.so']])
  t.same((await call('readdir', '/libbar.so'))[0], -E.ENOTDIR)
  t.same(await call('readlink', '/libfoo.so.1'), [0, 'libfoo.so.1.2.3'])
  t.same((await call('readlink', '/share'))[0], -E.EINVAL)
  t.same((await call('access', '/share/README', fsc.R_OK))[0], 0)
  t.same((await call('access', '/share/README', fsc.W_OK))[0], -E.EROFS)
  const [, statfs] = await call<{ flag: number, bfree: number }>('statfs', '/')
  t.same([statfs.flag, statfs.bfree], [1, 0], 'read-only, nothing free')
})

t.test('open refuses writing and directories; read copies the right bytes, clipped at the end', async (t) => {
  const { call, fs } = await fsOver(t, 'file')
  t.same((await call('open', '/libbar.so.2.0', fsc.O_RDWR))[0], -E.EROFS)
  t.same((await call('open', '/libbar.so.2.0', fsc.O_RDONLY | fsc.O_TRUNC))[0], -E.EROFS)
  t.same((await call('open', '/share', fsc.O_RDONLY))[0], -E.EISDIR)
  t.same(await call('open', '/libbar.so.2.0', fsc.O_RDONLY), [0, 0])
  const buf = Buffer.alloc(8192)
  const n = await new Promise<number>((resolve) => (fs.operations().read as unknown as (...a: unknown[]) => void)('/libbar.so.2.0', 0, buf, 8192, 150_001 - 100, resolve))
  t.equal(n, 100, 'a read past the end returns what is left')
  t.ok(buf.subarray(0, 100).equals(bytesFor('libbar.so.2.0', 150_001).subarray(150_001 - 100)))
  t.equal(fs.stats.bytesServedLocal, 100)
  t.same((await call('unlink', '/libbar.so.2.0'))[0], -E.EROFS)
  t.equal(fs.stats.ops.refused, 1)
})

t.test('getattr drops set-uid, set-gid and sticky bits, as fetch does', async (t) => {
  const libs = await makeTree(path.join(t.testdir(), 'libs'), { files: { 'suid': 10, 'sgid': 10 }, dirs: ['tmp'] })
  await Promise.all([chmod(path.join(libs, 'suid'), 0o4755), chmod(path.join(libs, 'sgid'), 0o2750), chmod(path.join(libs, 'tmp'), 0o1777)])
  const { call } = await fsOver(t, 'block', libs)
  const modeOf = async (p: string) => (await call<{ mode: number }>('getattr', p))[1].mode
  t.same([await modeOf('/suid'), await modeOf('/sgid'), await modeOf('/tmp')], [0o100555, 0o100550, 0o040555])
})
