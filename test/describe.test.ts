import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, realpath, symlink, truncate, writeFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import bencode from 'bencode'
import createTorrent from 'create-torrent'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { choosePieceLength, describeDirectory } from '../lib/describe.ts'
import { parseDescription, peerShareable, withLaunchInfo } from '../lib/description.ts'
import { P2prunError } from '../lib/errors.ts'
import { symlinkEscape } from '../lib/tree.ts'
import { bytesFor, LIBRARY_TREE, makeTree, withSymlinks } from './helpers/fixtures.ts'

const run = promisify(execFile)

t.test('the same tree gives the same infohash and bytes; a copy gives the same infohash', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'a/libs'), LIBRARY_TREE)
  const first = await describeDirectory(libs)
  const second = await describeDirectory(libs)
  t.equal(second.infoHash, first.infoHash)
  t.ok(second.torrent.equals(first.torrent), 'byte-identical description files')
  // A plain copy elsewhere: other mtimes and parent, same content, modes, links and name.
  await mkdir(path.join(dir, 'b'))
  await run('cp', ['-r', libs, path.join(dir, 'b/libs')])
  const copy = await describeDirectory(path.join(dir, 'b/libs'))
  t.equal(copy.infoHash, first.infoHash)
})

t.test('content, mode and tree changes change the infohash', async (t) => {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), LIBRARY_TREE)
  const base = (await describeDirectory(libs)).infoHash
  await writeFile(path.join(libs, 'share/README'), 'changed\n')
  const content = (await describeDirectory(libs)).infoHash
  t.not(content, base, 'content')
  await run('chmod', ['600', path.join(libs, 'share/README')])
  t.not((await describeDirectory(libs)).infoHash, content, 'mode')
})

t.test('the tree: symlink chains, empty files and dirs, odd names, modes, sizes, hashes', async (t) => {
  const libs = await makeTree(path.join(t.testdir(), 'libs'), LIBRARY_TREE)
  const desc = await describeDirectory(libs)
  const byPath = new Map(desc.entries.map((e) => [e.path, e]))
  t.same(desc.entries.map((e) => e.path), [
    '', 'empty-dir', 'libbar.so', 'libbar.so.2.0', 'libfoo.so', 'libfoo.so.1', 'libfoo.so.1.2.3',
    'python', 'python/__init__.py', 'python/ext module é.so', 'share', 'share/README'
  ])
  t.match(byPath.get('libfoo.so'), { type: 'symlink', target: 'libfoo.so.1' })
  t.match(byPath.get('libfoo.so.1'), { type: 'symlink', target: 'libfoo.so.1.2.3' })
  t.match(byPath.get('libfoo.so.1.2.3'), { type: 'file', size: 300_000, mode: 0o755 })
  t.match(byPath.get('empty-dir'), { type: 'dir' })
  t.match(byPath.get('python/__init__.py'), { type: 'file', size: 0, torrentFile: undefined })
  const expected = (await import('node:crypto')).createHash('sha256').update(bytesFor('libbar.so.2.0', 150_001)).digest('hex')
  t.equal(byPath.get('libbar.so.2.0')?.sha256, expected)
  t.equal(desc.totalBytes, 300_000 + 150_001 + 70_000 + 'library set for tests\n'.length)
  t.equal(desc.pieceLength, 64 * 1024)
  t.equal(desc.name, 'libs')
})

t.test('symlinks that leave the tree are refused unless --follow-symlinks copies them in', async (t) => {
  const dir = t.testdir()
  const outside = await makeTree(path.join(dir, 'outside'), { files: { 'libext.so': 5000, 'sub/libdeep.so': 6000 } })
  const libs = await makeTree(path.join(dir, 'libs'), { files: { 'libin.so': 1000 } })
  await symlink(path.join(outside, 'libext.so'), path.join(libs, 'libabs.so'))
  await t.rejects(describeDirectory(libs), { code: 'SOURCE', message: /libabs\.so -> .* can point outside the library directory: its target is absolute$/ })
  const libs2 = await makeTree(path.join(dir, 'libs2'), { files: { 'libin.so': 1000 }, symlinks: { 'up.so': '../outside/libext.so' } })
  await t.rejects(describeDirectory(libs2), { message: /up\.so -> \.\.\/outside\/libext\.so can point outside the library directory: its target climbs above the top directory$/ })

  await symlink('../outside/sub', path.join(libs, 'subdir'))
  const followed = await describeDirectory(libs, { followSymlinks: true })
  const byPath = new Map(followed.entries.map((e) => [e.path, e]))
  t.match(byPath.get('libabs.so'), { type: 'file', size: 5000 })
  t.match(byPath.get('subdir'), { type: 'dir' })
  t.match(byPath.get('subdir/libdeep.so'), { type: 'file', size: 6000 })
})

t.test('which symlink targets stay inside the tree', async (t) => {
  const cases: [string, string, string | undefined][] = [
    ['libfoo.so', 'libfoo.so.1', undefined],
    ['python/x.so', '../libfoo.so', undefined],
    ['a/b/top', '../..', undefined],
    ['python/here', './x/./y', undefined],
    ['evil', '/etc/passwd', 'is absolute'],
    ['evil', '../../../../etc/passwd', 'climbs above the top directory'],
    ['python/evil', '../../x', 'climbs above the top directory'],
    ['evil', 'a/../../x', 'goes up (..) after a name, which may itself be a symlink'],
    // Lexically inside ("python/x"), but if "a" is a link to ".." the ".." climbs out from there.
    ['python/evil', 'a/../x', 'goes up (..) after a name, which may itself be a symlink']
  ]
  for (const [link, target, escape] of cases) t.equal(symlinkEscape(link, target), escape, `${link} -> ${target}`)
})

t.test('a link chain that leads out, though each target looks inside on paper, is refused', async (t) => {
  const dir = t.testdir()
  const outside = await makeTree(path.join(dir, 'outside'), { files: { 'secret': 100 } })
  // d/top -> .. is the tree's top; evil -> d/top/../outside/secret normalises to d/outside/secret.
  const libs = await makeTree(path.join(dir, 'libs'), { files: { 'lib.so': 10 }, dirs: ['d'], symlinks: { 'd/top': '..', 'evil': 'd/top/../outside/secret' } })
  t.equal(await realpath(path.join(libs, 'evil')), await realpath(path.join(outside, 'secret')), 'the kernel resolves it outside')
  await t.rejects(describeDirectory(libs), { code: 'SOURCE', message: /evil -> d\/top\/\.\.\/outside\/secret can point outside the library directory: its target goes up \(\.\.\) after a name/ })
  const followed = await describeDirectory(libs, { followSymlinks: true })
  t.match(followed.entries.find((e) => e.path === 'evil'), { type: 'file', size: 100 }, '--follow-symlinks copies the target in')
})

t.test('parse: a hand-built description with a symlink that can lead outside the set is refused', async (t) => {
  const libs = await makeTree(path.join(t.testdir(), 'libs'), LIBRARY_TREE)
  const good = (await describeDirectory(libs)).torrent
  const inside = parseDescription(withSymlinks(good, { 'python/up.so': '../libfoo.so', 'python/top': '..' }), { source: 'x.torrent' })
  t.match(inside.entries.find((e) => e.path === 'python/up.so'), { type: 'symlink', target: '../libfoo.so' }, 'the forged description itself is valid')
  const refused: [Record<string, string>, string][] = [
    [{ evil: '/etc/passwd' }, 'x.torrent has symlink "evil" -> "/etc/passwd" that can point outside the set: its target is absolute'],
    [{ evil: '../../../../etc/passwd' }, 'x.torrent has symlink "evil" -> "../../../../etc/passwd" that can point outside the set: its target climbs above the top directory'],
    [{ 'python/evil': '../../etc/passwd' }, 'x.torrent has symlink "python/evil" -> "../../etc/passwd" that can point outside the set: its target climbs above the top directory'],
    [{ 'python/top': '..', evil: 'python/top/../../etc/passwd' }, 'x.torrent has symlink "evil" -> "python/top/../../etc/passwd" that can point outside the set: its target goes up (..) after a name, which may itself be a symlink'],
    [{ evil: '/\x1b]0;owned\x07' }, 'x.torrent has symlink "evil" -> "/\\x1b]0;owned\\x07" that can point outside the set: its target is absolute']
  ]
  for (const [links, message] of refused) {
    t.throws(() => parseDescription(withSymlinks(good, links), { source: 'x.torrent' }),
      { code: 'DESCRIPTION', message, hint: /made or edited by hand: describe the directory again/ }, message)
  }
})

t.test('bad inputs are clear errors naming the path', async (t) => {
  const dir = t.testdir({ 'a-file': 'x', 'only-empty': { 'e': '' } })
  await t.rejects(describeDirectory(path.join(dir, 'missing')), { code: 'SOURCE', message: /missing does not exist/ })
  await t.rejects(describeDirectory(path.join(dir, 'a-file')), { code: 'SOURCE', message: /a-file is not a directory/ })
  await t.rejects(describeDirectory(path.join(dir, 'only-empty')), { message: /no non-empty files/ })
  const libs = await makeTree(path.join(dir, 'libs'), { files: { 'lib.so': 10 } })
  await run('mkfifo', [path.join(libs, 'pipe')])
  await t.rejects(describeDirectory(libs), { code: 'SOURCE', message: /libs\/pipe is a FIFO/ })
  const loop = await makeTree(path.join(dir, 'loop'), { files: { 'lib.so': 10 }, symlinks: { 'self': '../loop' } })
  await t.rejects(describeDirectory(loop, { followSymlinks: true }), { message: /symlink loop/ })
})

t.test('piece length: 64 KiB for small sets, growing to keep ~2,048 pieces, at most 1 MiB', async (t) => {
  t.equal(choosePieceLength(1), 64 * 1024)
  t.equal(choosePieceLength(31e6), 64 * 1024)
  t.equal(choosePieceLength(200e6), 128 * 1024)
  t.equal(choosePieceLength(1024 ** 3), 512 * 1024)
  t.equal(choosePieceLength(50 * 1024 ** 3), 1024 * 1024)
})

t.test('10,000 files in one directory', async (t) => {
  const libs = path.join(t.testdir(), 'many')
  await mkdir(libs)
  await Promise.all(Array.from({ length: 10_000 }, (_, i) => writeFile(path.join(libs, `f${i}.so`), `content ${i}\n`)))
  const desc = await describeDirectory(libs)
  t.equal(desc.entries.length, 10_001)
  const again = parseDescription(desc.torrent)
  t.equal(again.entries.filter((e) => e.torrentFile !== undefined).length, 10_000)
})

t.test('a file of several GiB (sparse) is described with 1 MiB pieces', async (t) => {
  const libs = path.join(t.testdir(), 'big')
  await mkdir(libs)
  const size = 4.5 * 1024 ** 3
  await writeFile(path.join(libs, 'libhuge.so'), '')
  await truncate(path.join(libs, 'libhuge.so'), size)
  await writeFile(path.join(libs, 'libsmall.so'), bytesFor('s', 1000))
  const desc = await describeDirectory(libs)
  t.equal(desc.totalBytes, size + 1000)
  t.equal(desc.pieceLength, 1024 * 1024)
  t.equal(desc.pieceCount, Math.ceil((size + 1000) / (1024 * 1024)))
  const small = desc.entries.find((e) => e.path === 'libsmall.so')
  t.equal(small?.torrentOffset, size, 'offsets beyond 4 GiB')
})

t.test('parse: corrupt, truncated, tampered and foreign torrents are DescriptionErrors', async (t) => {
  const libs = await makeTree(path.join(t.testdir(), 'libs'), LIBRARY_TREE)
  const good = (await describeDirectory(libs)).torrent
  const bad = (bytes: Uint8Array) => {
    try { parseDescription(bytes, { source: 'x.torrent' }); return 'parsed' } catch (err) { return err }
  }
  t.match(bad(good.subarray(0, good.length - 10)), { code: 'DESCRIPTION', message: /x\.torrent is not a torrent file \(truncated or corrupt/ })
  t.match(bad(Buffer.from('hello world')), { code: 'DESCRIPTION' })
  t.match(bad(Buffer.alloc(0)), { code: 'DESCRIPTION' })
  // Change a mode inside the info dict: the recorded infohash no longer matches.
  const tampered = Buffer.from(good.toString('latin1').replace('1:mi493e', '1:mi511e'), 'latin1')
  t.not(tampered.toString('latin1'), good.toString('latin1'), 'the tamper applied')
  t.match(bad(tampered), { message: /corrupt or was edited/ })
  const plain = await new Promise<Uint8Array>((resolve, reject) =>
    createTorrent([Object.assign(Readable.from([Buffer.from('x')]), { name: 'x' })], { announceList: [] },
      (err, buf) => err ? reject(err) : resolve(buf)))
  t.match(bad(plain), { message: /not a p2prun description/ })
  t.throws(() => parseDescription(good, { expectInfoHash: '0'.repeat(40) }), P2prunError)
})

t.test('the infohash is the SHA-1 of the info dictionary\'s bytes; the peers\' copy is cut from the bytes, less the launch\'s trackers, seeders and DHT nodes', async (t) => {
  const libs = await makeTree(path.join(t.testdir(), 'libs'), LIBRARY_TREE)
  const plain = await describeDirectory(libs)
  const launched = withLaunchInfo(plain, { trackers: ['http://10.0.0.1:7000/announce'], seeders: ['10.0.0.1:7001'], dhtNodes: ['10.0.0.1:7002'] })
  // bencode's own decode and encode are the reference.
  const decoded = bencode.decode(launched.torrent) as Record<string, any>
  t.ok(decoded.announce && decoded.nodes && decoded.p2prun.seeders.length === 1, 'the launch info is in the description')
  t.equal(launched.infoHash, createHash('sha1').update(bencode.encode(decoded.info)).digest('hex'), 'the infohash')
  t.equal(launched.infoHash, plain.infoHash, 'the launch info leaves it as it was')
  delete decoded.announce
  delete decoded['announce-list']
  delete decoded.nodes
  delete decoded.p2prun.seeders
  const shareable = peerShareable(launched)
  t.ok(shareable.equals(Buffer.from(bencode.encode(decoded))), 'the peers\' copy: the same bytes as decoding, deleting and encoding')
  t.equal(parseDescription(shareable).infoHash, plain.infoHash, 'with the same infohash')
  const again = parseDescription(shareable)
  t.equal(peerShareable(again), again.torrent, 'a copy with nothing to cut is handed on as it is')
})
