// The tracker over real HTTP: only the job's infohash and, given the job's secret, only its nodes;
// peer lists sized for big jobs.
import { randomBytes } from 'node:crypto'
import bencode from 'bencode'
import t, { type Test } from 'tap'
import { newJobSecret, proof, withProof } from '../lib/swarm/job-auth.ts'
import { startTracker, type TrackerOptions } from '../lib/swarm/tracker.ts'
import { pct } from './helpers/peer-wire.ts'

const INFO_HASH = randomBytes(20)


function peerIdOf (peer: number): Buffer {
  const peerId = Buffer.alloc(20, 0)
  Buffer.from(`-TEST00-${String(peer).padStart(12, '0')}`).copy(peerId)
  return peerId
}

async function announce (port: number, infoHash: Uint8Array, peer: number, numwant?: number, auth?: Buffer, peerId = peerIdOf(peer)) {
  const q = `info_hash=${pct(infoHash)}&peer_id=${pct(peerId)}&port=${10_000 + peer}&uploaded=0&downloaded=0&left=100` +
    `&event=started&compact=1${numwant ? `&numwant=${numwant}` : ''}${auth ? `&p2prun_auth=${auth.toString('hex')}` : ''}`
  const res = await fetch(`http://127.0.0.1:${port}/announce?${q}`)
  return bencode.decode(new Uint8Array(await res.arrayBuffer())) as Record<string, unknown>
}

async function tracker (t: Test, extra: Partial<TrackerOptions> = {}) {
  const tr = await startTracker({ host: '127.0.0.1', port: 0, infoHashes: [INFO_HASH.toString('hex')], maxPeers: 20_000, announcePeers: 200, ...extra })
  t.teardown(tr.close)
  return tr
}

t.test('an unknown infohash gets a failure reason, the job\'s infohash a peer list', async (t) => {
  const tr = await tracker(t)
  const refused = await announce(tr.port, randomBytes(20), 1)
  t.match(Buffer.from(refused['failure reason'] as Uint8Array).toString(), /serves only its job; unknown infohash/)
  const ok = await announce(tr.port, INFO_HASH, 1)
  t.equal(ok['failure reason'], undefined)
  t.equal(tr.peerCount(INFO_HASH.toString('hex')), 1)
})

t.test('more than 82 peers per announce (bittorrent-tracker\'s cap, which p2prun used before), up to the configured cap', async (t) => {
  const tr = await tracker(t, { announcePeers: 120 })
  for (let i = 0; i < 150; i++) await announce(tr.port, INFO_HASH, i)
  t.equal(tr.peerCount(INFO_HASH.toString('hex')), 150)
  const many = await announce(tr.port, INFO_HASH, 999, 500)
  t.equal((many.peers as Uint8Array).length / 6, 120, 'capped at announcePeers')
  const some = await announce(tr.port, INFO_HASH, 998, 100)
  t.equal((some.peers as Uint8Array).length / 6, 100, 'what was asked, above 82')
})

t.test('peer lists hold exactly the registered peers\' addresses, after others left too, and never the asker', async (t) => {
  const tr = await tracker(t)
  for (let i = 0; i < 300; i++) await announce(tr.port, INFO_HASH, i)
  const leave = async (peer: number) => fetch(`http://127.0.0.1:${tr.port}/announce?info_hash=${pct(INFO_HASH)}&peer_id=${pct(peerIdOf(peer))}` +
    `&port=${10_000 + peer}&uploaded=0&downloaded=0&left=0&event=stopped&compact=1`)
  for (let i = 0; i < 300; i += 3) await leave(i) // from everywhere in the table, the last slot included
  await leave(299)
  const ports = (list: Uint8Array) => Array.from({ length: list.length / 6 }, (_, k) => Buffer.from(list).readUInt16BE(6 * k + 4))
  const staying = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 3 !== 0 && i !== 299).map((i) => 10_000 + i)
  const all = ports((await announce(tr.port, INFO_HASH, 1000, 500)).peers as Uint8Array)
  t.same(all.sort(), staying.sort(), 'a newcomer asking for more than there are gets every one that stayed')
  const some = ports((await announce(tr.port, INFO_HASH, 5, 150)).peers as Uint8Array)
  t.equal(new Set(some).size, 150, '150 distinct peers')
  t.ok(some.every((port) => port !== 10_005 && (staying.includes(port) || port === 11_000)), 'of those registered, never the asker')
})

t.test('the swarm remembers at most maxPeers peers', async (t) => {
  const tr = await tracker(t, { maxPeers: 40 })
  for (let i = 0; i < 60; i++) await announce(tr.port, INFO_HASH, i)
  t.equal(tr.peerCount(INFO_HASH.toString('hex')), 40)
})

t.test('a busy port is a clear error', async (t) => {
  const tr = await tracker(t)
  await t.rejects(startTracker({ host: '127.0.0.1', port: tr.port, infoHashes: [], maxPeers: 1, announcePeers: 1 }),
    { code: 'TRACKER', message: new RegExp(`cannot listen on 127.0.0.1:${tr.port}: EADDRINUSE`) })
})

t.test('with a job secret: announces and the description need their proof; no scrape', async (t) => {
  const secret = newJobSecret()
  const description = Buffer.from('d4:infod4:name4:testee')
  const hex = INFO_HASH.toString('hex')
  const tr = await tracker(t, { secret, descriptions: new Map([[hex, description]]) })
  const refused = await announce(tr.port, INFO_HASH, 1)
  t.match(Buffer.from(refused['failure reason'] as Uint8Array).toString(), /lacks a valid proof of the job's secret/)
  t.equal(tr.peerCount(hex), 0, 'a peer without the proof is not listed')
  const peerId = peerIdOf(2)
  const forged = await announce(tr.port, INFO_HASH, 2, undefined, proof(newJobSecret(), 'announce', INFO_HASH, peerId))
  t.ok(forged['failure reason'], 'a proof made with another secret is refused')
  const wrongPurpose = await announce(tr.port, INFO_HASH, 2, undefined, proof(secret, 'description', INFO_HASH))
  t.ok(wrongPurpose['failure reason'], 'a proof for the description is no proof for an announce')
  const ok = await announce(tr.port, INFO_HASH, 2, undefined, proof(secret, 'announce', INFO_HASH, peerId))
  t.equal(ok['failure reason'], undefined)
  t.equal(tr.peerCount(hex), 1)

  const url = `http://127.0.0.1:${tr.port}/p2prun/${hex}.torrent`
  t.equal((await fetch(url)).status, 403, 'the description needs its proof')
  const got = await fetch(withProof(url, secret, 'description', INFO_HASH))
  t.equal(got.status, 200)
  t.same(Buffer.from(await got.arrayBuffer()), description)
  t.equal((await fetch(`http://127.0.0.1:${tr.port}/scrape?info_hash=${pct(INFO_HASH)}`)).status, 404, 'no scrape')
})

t.test('a full swarm forgets a node to make room, never the head\'s seeder', async (t) => {
  const tr = await tracker(t, { maxPeers: 5 })
  const head = Buffer.alloc(20, 0)
  Buffer.from('-P2H020-headheadhead').copy(head)
  await announce(tr.port, INFO_HASH, 0, undefined, undefined, head)
  for (let i = 1; i < 200; i++) await announce(tr.port, INFO_HASH, i)
  t.equal(tr.peerCount(INFO_HASH.toString('hex')), 5)
  const listed = await announce(tr.port, INFO_HASH, 999, 10)
  const ports = []
  const peers = listed.peers as Uint8Array
  for (let i = 0; i + 6 <= peers.length; i += 6) ports.push((peers[i + 4] as number) * 256 + (peers[i + 5] as number))
  t.ok(ports.includes(10_000), `the head (port 10000) is still listed: ${ports.join(', ')}`)
})

t.test('malformed requests get an error reply and the tracker keeps serving', async (t) => {
  const tr = await tracker(t)
  const params = ['info_hash', 'peer_id', 'port', 'left', 'numwant', 'event', 'compact', 'p2prun_auth']
  const noise = (n: number) => pct(randomBytes(n))
  let answered = 0
  for (let i = 0; i < 300; i++) {
    const q = params.filter(() => Math.random() < 0.7).map((p) => `${p}=${Math.random() < 0.5 ? noise(Math.floor(Math.random() * 40)) : String(Math.floor(Math.random() * 2 ** 32) - 1000)}`)
    const path = ['/announce', '/scrape', '/p2prun/', `/p2prun/${noise(20)}.torrent`, `/${noise(8)}`][i % 5]
    const res = await fetch(`http://127.0.0.1:${tr.port}${path}?${q.join('&')}%${i % 3 === 0 ? 'zz' : ''}`, { method: i % 7 === 0 ? 'POST' : 'GET' })
    await res.arrayBuffer()
    answered++
  }
  t.equal(answered, 300, 'every request was answered')
  const ok = await announce(tr.port, INFO_HASH, 1)
  t.equal(ok['failure reason'], undefined, 'and a good announce still works')
})
