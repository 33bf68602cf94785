// The piece picker inside one swarm node (in process), against a real seeder over loopback whose
// upload is capped, so the order in which pieces arrive is the picker's, not the network's.
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import t, { type Test } from 'tap'
import { parseDescription } from '../lib/description.ts'
import { SwarmNode } from '../lib/swarm/node.ts'
import { bytesFor, makeTree } from './helpers/fixtures.ts'
import { p2prun, serve } from './helpers/cli.ts'

const FILES = { 'liba.so': 2_000_000, 'libz.so': 2_000_000 }

async function joined (t: Test) {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), { files: FILES })
  const file = path.join(dir, 'job.p2p.torrent')
  t.equal((await p2prun(['describe', libs, '-o', file])).exitCode, 0)
  // 1 MiB/s: the whole set takes ~4 s to leave the head, one piece ~64 ms.
  const head = await serve(file, libs, ['--upload-limit', String(1024 * 1024)])
  t.teardown(head.stop)
  const desc = parseDescription(await readFile(file))
  const node = await SwarmNode.join(desc, {
    storeDir: dir, port: 0, maxConns: 10, numwant: 10, stallTimeoutMs: 30_000, trackers: [head.tracker], seeders: [head.seeder]
  })
  t.teardown(() => node.close())
  const entry = (name: string) => {
    const e = desc.entries.find((x) => x.path === name)
    if (!e) throw new Error(`${name} is not in the description`)
    return e
  }
  return { node, entry }
}

t.test('a read the program waits on overtakes the background fetch of the whole set', async (t) => {
  const { node, entry } = await joined(t)
  let backgroundDone = false
  const all = node.fetchAll().then(() => { backgroundDone = true })
  const last = entry('libz.so')
  const bytes = Buffer.alloc(4096)
  t.equal(await node.read(last, last.size - 4096, bytes), 4096)
  t.equal(backgroundDone, false, 'the read was answered while the background fetch was still running')
  const early = node.stats()
  t.ok(early.piecesHave <= early.pieceCount / 4,
    `the read did not wait behind the background (${early.piecesHave} of ${early.pieceCount} pieces had arrived)`)
  t.same(bytes, bytesFor('libz.so', FILES['libz.so']).subarray(-4096), 'the read returned the right bytes')
  await all
  const stats = node.stats()
  t.equal(stats.piecesHave, stats.pieceCount, 'the background fetch then completed the set')
})

t.test('opening a file fetches that file ahead of the background, whole', async (t) => {
  const { node, entry } = await joined(t)
  let backgroundDone = false
  const all = node.fetchAll().then(() => { backgroundDone = true })
  const a = entry('liba.so')
  await node.fetchFile(a)
  t.equal(backgroundDone, false, 'the file was complete while the background fetch was still running')
  t.ok(node.has(a, 0, a.size), 'every piece of the file is present')
  const { piecesHave, pieceCount } = node.stats()
  const filePieces = Math.ceil(a.size / (node.description.pieceLength))
  t.ok(piecesHave - filePieces <= pieceCount / 4,
    `the file did not wait behind the background (${piecesHave - filePieces} other pieces of ${pieceCount} had arrived)`)
  await all
})
