// The tracker over real HTTP: only the job's infohash, and peer lists sized for big jobs.
import { randomBytes } from 'node:crypto'
import bencode from 'bencode'
import t, { type Test } from 'tap'
import { startTracker, type TrackerOptions } from '../lib/swarm/tracker.ts'

const INFO_HASH = randomBytes(20)

const pct = (bytes: Uint8Array) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')

async function announce (port: number, infoHash: Uint8Array, peer: number, numwant?: number) {
  const peerId = Buffer.alloc(20, 0)
  Buffer.from(`-TEST00-${String(peer).padStart(12, '0')}`).copy(peerId)
  const q = `info_hash=${pct(infoHash)}&peer_id=${pct(peerId)}&port=${10_000 + peer}&uploaded=0&downloaded=0&left=100` +
    `&event=started&compact=1${numwant ? `&numwant=${numwant}` : ''}`
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
  t.match(Buffer.from(refused['failure reason'] as Uint8Array).toString(), /serves only its job's description; unknown infohash/)
  const ok = await announce(tr.port, INFO_HASH, 1)
  t.equal(ok['failure reason'], undefined)
  t.equal(tr.peerCount(INFO_HASH.toString('hex')), 1)
})

t.test('more than bittorrent-tracker\'s 82 peers per announce, up to the configured cap', async (t) => {
  const tr = await tracker(t, { announcePeers: 120 })
  for (let i = 0; i < 150; i++) await announce(tr.port, INFO_HASH, i)
  t.equal(tr.peerCount(INFO_HASH.toString('hex')), 150)
  const many = await announce(tr.port, INFO_HASH, 999, 500)
  t.equal((many.peers as Uint8Array).length / 6, 120, 'capped at announcePeers')
  const some = await announce(tr.port, INFO_HASH, 998, 100)
  t.equal((some.peers as Uint8Array).length / 6, 100, 'what was asked, above 82')
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
