// The head's seeder and several nodes, each a separate `p2prun` process, over real TCP on loopback.
import { readdir, stat, utimes, writeFile } from 'node:fs/promises'
import path from 'node:path'
import t, { type Test } from 'tap'
import { bytesFor, snapshotTree } from './helpers/fixtures.ts'
import { describedTree, p2prun, serve } from './helpers/cli.ts'

const SET_FILES = { 'libone.so.1': 3_000_000, 'libtwo.so.1': 2_500_000, 'sub/libthree.so': 1_700_000, 'tiny.so': 10 }

async function describedSet (t: Test) {
  const described = await describedTree(t, { files: SET_FILES, symlinks: { 'libone.so': 'libone.so.1' }, dirs: ['empty'] })
  return { ...described, bytes: Object.values(SET_FILES).reduce((a, b) => a + b, 0) }
}

t.test('a seeder and three fetching nodes: identical bytes, and the nodes feed each other', async (t) => {
  const { dir, libs, file, bytes } = await describedSet(t)
  // The head's link is the bottleneck p2prun exists for: cap it so nodes must trade pieces.
  const head = await serve(file, libs, ['--upload-limit', String(2 * 1024 * 1024)])
  t.teardown(head.stop)
  const fetches = [1, 2, 3].map((i) => p2prun(['fetch', file, '--out', path.join(dir, `node${i}`), '--tracker', head.tracker,
    '--seeder', head.seeder, '--store-dir', dir, '--json']))
  t.teardown(() => { for (const f of fetches) f.kill() })
  const results = await Promise.all(fetches)
  const expected = await snapshotTree(libs)
  let fromPeers = 0
  for (const [i, r] of results.entries()) {
    t.equal(r.exitCode, 0, `node ${i + 1}: ${r.stderr}`)
    t.same(await snapshotTree(path.join(dir, `node${i + 1}`)), expected, `node ${i + 1} has every file byte for byte`)
    const counters = JSON.parse(String(r.stdout).trim())
    t.equal(counters.fromHead + counters.fromPeers >= bytes, true, 'received at least the set')
    fromPeers += counters.fromPeers
  }
  const uploaded = await head.stop()
  t.ok(uploaded >= bytes, `the seeder sent the set at least once (${uploaded} bytes)`)
  // One node at a time per piece (--defer-to-peers, on by default): the head sends the set about once.
  t.ok(uploaded < 1.25 * bytes, `the seeder sent ${(uploaded / bytes).toFixed(2)}x the set, not up to 3x`)
  t.ok(fromPeers > 0.5 * bytes, `nodes got ${(fromPeers / bytes).toFixed(2)}x the set from each other`)
  t.same((await readdir(dir)).filter((n) => n.startsWith('p2prun-')), [], 'no store left behind')
})

t.test('with --defer-to-peers 0 the head serves every request, and every node completes', async (t) => {
  const { dir, libs, file, bytes } = await describedSet(t)
  const head = await serve(file, libs, ['--defer-to-peers', '0', '--upload-limit', String(2 * 1024 * 1024)])
  t.teardown(head.stop)
  const results = await Promise.all([1, 2, 3].map((i) => p2prun(['fetch', file, '--out', path.join(dir, `node${i}`),
    '--tracker', head.tracker, '--seeder', head.seeder, '--store-dir', dir, '--json'])))
  const expected = await snapshotTree(libs)
  for (const [i, r] of results.entries()) {
    t.equal(r.exitCode, 0, `node ${i + 1}: ${r.stderr}`)
    t.same(await snapshotTree(path.join(dir, `node${i + 1}`)), expected, `node ${i + 1} has every file byte for byte`)
  }
  const uploaded = await head.stop()
  t.ok(uploaded >= bytes && uploaded < 3 * bytes, `the head sent ${(uploaded / bytes).toFixed(2)}x the set`)
})

t.test('a node that cannot reach any seeder fails after the stall timeout and leaves nothing', async (t) => {
  const { dir, file } = await describedSet(t)
  const r = await p2prun(['fetch', file, '--out', path.join(dir, 'out'), '--seeder', '127.0.0.1:9', '--store-dir', dir,
    '--stall-timeout', '2'])
  t.equal(r.exitCode, 1)
  t.match(r.stderr, /^p2prun fetch: error: no data arrived for 2 s \(0 peers connected\).*\(hint: check that `p2prun serve`/)
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  const left = await readdir(dir)
  t.notOk(left.includes('out'), 'the output directory it created is removed')
  t.same(left.filter((n) => n.startsWith('p2prun-')), [], 'no store left behind')
})

t.test('fetch without any tracker or seeder is refused up front', async (t) => {
  const { dir, file } = await describedSet(t)
  const r = await p2prun(['fetch', file, '--out', path.join(dir, 'out'), '--store-dir', dir])
  t.equal(r.exitCode, 1)
  t.match(r.stderr, /names no tracker or seeder.*hint: pass --tracker URL or --seeder HOST:PORT/)
})

t.test('the seeder checks its source against the description', async (t) => {
  const { libs, file } = await describedSet(t)
  // Same size, same mtime, other bytes: only hashing can tell.
  const target = path.join(libs, 'libtwo.so.1')
  const { mtime } = await stat(target)
  await writeFile(target, bytesFor('something else', 2_500_000))
  await utimes(target, mtime, mtime)
  const verified = await p2prun(['serve', file, '--source', libs, '--host', '127.0.0.1', '--open', '--verify-source'])
  t.equal(verified.exitCode, 1)
  t.match(verified.stderr, /does not match the description: \d+ of \d+ pieces differ/)
  // A size change is caught without hashing.
  await writeFile(target, 'short')
  const sized = await p2prun(['serve', file, '--source', libs, '--host', '127.0.0.1', '--open'])
  t.equal(sized.exitCode, 1)
  t.match(sized.stderr, /libtwo\.so\.1 has 5 bytes, the description says 2500000/)
})
