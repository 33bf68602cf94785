// p2prun's BitTorrent engine against a stock client (webtorrent), both ways, over real TCP on
// loopback: the head's seeder serves it, and a node fetches from it. The description is a plain
// torrent, so anything that speaks BEP 3 can join a job's swarm.
import { mkdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import t, { type Test } from 'tap'
import WebTorrent, { type Torrent } from 'webtorrent'
import { bytesFor, snapshotTree } from './helpers/fixtures.ts'
import { describedTree, p2prun, serve } from './helpers/cli.ts'

const FILES = { 'liba.so.1': 1_500_000, 'sub/libb.so': 700_000, 'tiny.so': 10 }

/** A set in DIR/set: the torrent's name is the directory's, so webtorrent finds the files under DIR. */
const describedSet = (t: Test) => describedTree(t, { files: FILES }, 'set')

/**
 * A webtorrent client on loopback: no DHT, local discovery, peer exchange, uTP, NAT traversal or
 * tracker, and no protocol encryption (MSE, which webtorrent tries first and p2prun does not speak).
 */
function stockClient (t: Test): WebTorrent {
  const client = new WebTorrent({ dht: false, lsd: false, utPex: false, natUpnp: false, natPmp: false, utp: false, webSeeds: false, tracker: false, secure: 0 })
  t.teardown(() => new Promise<void>((resolve) => client.destroy(() => resolve())))
  return client
}

const untilDone = (torrent: Torrent) => new Promise<void>((resolve, reject) => {
  if (torrent.done) return resolve()
  torrent.once('done', () => resolve())
  torrent.once('error', reject)
})

t.test('a stock BitTorrent client downloads the set from the head\'s seeder', async (t) => {
  const { dir, libs, file, torrent } = await describedSet(t)
  const head = await serve(file, libs)
  t.teardown(head.stop)
  const out = path.join(dir, 'stock')
  await mkdir(out)
  const client = stockClient(t)
  const added = client.add(torrent, { path: out, announce: [] })
  added.once('ready', () => added.addPeer(head.seeder))
  await untilDone(added)
  t.same(await snapshotTree(path.join(out, 'set')), await snapshotTree(libs), 'every file byte for byte')
  const uploaded = await head.stop()
  t.ok(uploaded >= added.downloaded, `the head sent ${uploaded} bytes, the client got ${added.downloaded}`)
})

t.test('a node fetches the set from a stock BitTorrent seeder', async (t) => {
  const { dir, libs, file, torrent } = await describedSet(t)
  const client = stockClient(t)
  const seeding = client.add(torrent, { path: dir, announce: [] })
  await untilDone(seeding) // verified the files in DIR/set: it is a seeder
  const port = client.address()?.port
  const out = path.join(dir, 'node')
  const r = await p2prun(['fetch', file, '--out', out, '--seeder', `127.0.0.1:${port}`, '--store-dir', dir, '--json', '--stall-timeout', '20'])
  t.equal(r.exitCode, 0, r.stderr)
  t.same(await snapshotTree(out), await snapshotTree(libs), 'every file byte for byte')
  const total = Object.values(FILES).reduce((a, b) => a + b, 0)
  t.equal(JSON.parse(r.stdout).fromPeers, total, 'all of it from the stock seeder (a peer, not the head)')
  // webtorrent counts the 13-byte header of each piece message too.
  t.ok(seeding.uploaded >= total && seeding.uploaded < 1.01 * total, `the stock seeder sent the set once (${seeding.uploaded} bytes)`)
  t.same(bytesFor('tiny.so', 10), await readFile(path.join(out, 'tiny.so')))
})
