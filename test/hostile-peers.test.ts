// The head and the nodes against peers that break the protocol or lie, and against a head that
// goes away: real `p2prun serve` and `p2prun fetch` processes, hostile peers as raw TCP on loopback.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import bencode from 'bencode'
import t, { type Test } from 'tap'
import { parseDescription } from '../lib/description.ts'
import { SwarmNode } from '../lib/swarm/node.ts'
import { bytesFor, snapshotTree } from './helpers/fixtures.ts'
import { describedTree, p2prun, SEEDERS, serve, type Serving } from './helpers/cli.ts'
import { answersHandshake, handshake, liar, message, pct, portOf, sendAndAwaitClose, strangerId, u32 } from './helpers/peer-wire.ts'

const SET_FILES = { 'libone.so.1': 3_000_000, 'libtwo.so.1': 2_500_000, 'sub/libthree.so': 1_700_000 }

async function describedSet (t: Test) {
  const described = await describedTree(t, { files: SET_FILES })
  return { ...described, infoHash: Buffer.from(parseDescription(described.torrent).infoHash, 'hex') }
}

/** Lists a peer with an open head's tracker; resolves with the ports of the peers it lists back. */
async function announcePeer (tracker: string, infoHash: Buffer, port: number): Promise<number[]> {
  const peerId = strangerId()
  const res = await fetch(`${tracker}?info_hash=${pct(infoHash)}&peer_id=${pct(peerId)}&port=${port}` +
    '&uploaded=0&downloaded=0&left=0&event=started&compact=1&numwant=50')
  if (!res.ok) throw new Error(`announce: HTTP ${res.status}`)
  const peers = (bencode.decode(new Uint8Array(await res.arrayBuffer())) as { peers: Uint8Array }).peers
  const ports: number[] = []
  for (let i = 0; i + 6 <= peers.length; i += 6) ports.push(((peers[i + 4] as number) << 8) | (peers[i + 5] as number))
  return ports
}

/** Whether something accepts TCP connections at host:port. */
function accepts (host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host, () => { socket.destroy(); resolve(true) })
    socket.on('error', () => resolve(false))
  })
}

function fetchFrom (dir: string, file: string, head: Serving, name: string, extra: readonly string[] = [], env: Record<string, string> = {}) {
  return p2prun(['fetch', file, '--out', path.join(dir, name), '--tracker', head.tracker, '--seeder', head.seeder,
    '--store-dir', dir, ...extra], { env })
}

async function fetchSet (t: Test, dir: string, file: string, head: Serving, name: string, extra: readonly string[] = [], env: Record<string, string> = {}) {
  const r = await fetchFrom(dir, file, head, name, extra, env)
  t.equal(r.exitCode, 0, `${name}: ${r.stderr}`)
  return r
}

for (const { seeder, args } of SEEDERS) {
  t.test(`the head survives every malformed message and still serves the set (${seeder} seeder)`, async (t) => {
    const { dir, libs, file, infoHash } = await describedSet(t)
    const head = await serve(file, libs, args)
    t.teardown(head.stop)
    const hostile: Array<[string, Buffer]> = [
      ['a have without its index', Buffer.from('0000000104', 'hex')],
      ['a bitfield of the wrong size', message(5, Buffer.from([0xff]))],
      ['a request of 12 bytes', message(6, Buffer.alloc(11))],
      ['a piece without its header', message(7, Buffer.alloc(2))],
      ['a message of 4 GiB', u32(0xffffffff)]
    ]
    for (const [name, bytes] of hostile) {
      await sendAndAwaitClose(head.seeder, Buffer.concat([handshake(infoHash), bytes]))
      t.ok(await answersHandshake(head.seeder, infoHash), `${name}: the head closed that connection and answers the next`)
    }
    for (let i = 0; i < 40; i++) {
      // Random noise after a good handshake, often framed as a message: whatever the head makes of
      // it (an unknown message is ignored, so we end the connection), it must not die.
      const noise = randomBytes(1 + Math.floor(Math.random() * 200))
      const framed = i % 2 === 0 ? Buffer.concat([u32(noise.length), noise]) : noise
      await sendAndAwaitClose(head.seeder, Buffer.concat([handshake(infoHash), framed]), true)
    }
    t.ok(await answersHandshake(head.seeder, infoHash), 'the head survived 40 streams of noise')
    await fetchSet(t, dir, file, head, 'out')
    t.same(await snapshotTree(path.join(dir, 'out')), await snapshotTree(libs), 'and a node still gets every byte')
  })
}

t.test('a node drops a peer whose pieces fail their hash and one that breaks the protocol, and completes from the head', async (t) => {
  const { dir, libs, file, infoHash } = await describedSet(t)
  // A slow head: the liars are asked for pieces before the head could send them all.
  const head = await serve(file, libs, ['--upload-limit', String(2 * 1024 * 1024)])
  t.teardown(head.stop)
  const junk = await liar(t, infoHash)
  const crasher = await liar(t, infoHash, Buffer.from('0000000104', 'hex'))
  await announcePeer(head.tracker, infoHash, junk.port)
  await announcePeer(head.tracker, infoHash, crasher.port)
  const r = await fetchSet(t, dir, file, head, 'out', ['--stall-timeout', '20'])
  t.same(await snapshotTree(path.join(dir, 'out')), await snapshotTree(libs), 'every byte is right')
  t.ok(junk.counts.requests > 0, `the lying peer was asked (${junk.counts.requests} requests)`)
  t.match(r.stderr, new RegExp(`dropped peer 127\\.0\\.0\\.1:${junk.port} for a while: it sent piece \\d+, which failed its hash check`))
  t.equal(junk.counts.connections, 1, 'the dropped peer is not dialed again')
  t.ok(crasher.counts.connections >= 1, 'the peer sending a broken message was reached, and the node lived on')
})

for (const { seeder, args } of SEEDERS) {
  t.test(`a source that changes while served (same size): the head says so once and sends no bad piece (${seeder} seeder)`, async (t) => {
    const { dir, libs, file } = await describedSet(t)
    const head = await serve(file, libs, args)
    t.teardown(head.stop)
    // Started on a matching source; then a file gets other bytes in place, as a rebuild into the
    // same path would: sizes and mtimes cannot tell, only the pieces' hashes.
    await writeFile(path.join(libs, 'libtwo.so.1'), bytesFor('something else', SET_FILES['libtwo.so.1']))
    const r = await p2prun(['fetch', file, '--out', path.join(dir, 'out'), '--tracker', head.tracker, '--seeder', head.seeder,
      '--store-dir', dir, '--stall-timeout', '2'])
    t.equal(r.exitCode, 1, 'the node gives up after the stall timeout instead of fetching bad pieces forever')
    t.match(r.stderr, /no data arrived for 2 s/)
    const uploaded = await head.stop()
    const total = Object.values(SET_FILES).reduce((a, b) => a + b, 0)
    t.ok(uploaded <= total, `the head sent ${uploaded} bytes, no more than the set`)
    const { stderr } = await head.child
    const warnings = String(stderr).split('\n').filter((l) => l.includes('no longer matches'))
    t.equal(warnings.length, 1, 'one warning')
    t.match(warnings[0], /^p2prun serve: warning: the source no longer matches the description: piece \d+ \(.*libtwo\.so\.1.*\) has other bytes; such pieces are not served/)
  })
}

t.test('the native seeder hashes a piece again once a file it spans changed after it was sent', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const head = await serve(file, libs)
  t.teardown(head.stop)
  await fetchSet(t, dir, file, head, 'first')
  // Every piece was sent once, hashed then; now a file gets other bytes in place (same size).
  await writeFile(path.join(libs, 'libtwo.so.1'), bytesFor('something else', SET_FILES['libtwo.so.1']))
  const r = await fetchFrom(dir, file, head, 'second', ['--stall-timeout', '2'])
  t.equal(r.exitCode, 1, 'the second node gets no bad piece: it gives up after the stall timeout')
  t.notMatch(r.stderr, /failed its hash check/, 'and none failed its check there')
  await head.stop()
  const warnings = String((await head.child).stderr).split('\n').filter((l) => l.includes('no longer matches'))
  t.equal(warnings.length, 1, 'the head says so once')
})

t.test('a head that restarts on the same address is found again, and the fetch completes', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const first = await serve(file, libs, ['--upload-limit', String(1024 * 1024)])
  t.teardown(first.stop)
  const trackerPort = new URL(first.tracker).port
  const seederPort = String(portOf(first.seeder))
  const fetching = p2prun(['fetch', file, '--out', path.join(dir, 'out'), '--tracker', first.tracker, '--seeder', first.seeder,
    '--store-dir', dir, '--stall-timeout', '30'])
  t.teardown(() => { fetching.kill() })
  await waitFor(async () => (await established(seederPort)) > 0, 'the node connected to the seeder')
  first.child.kill('SIGKILL')
  await first.child
  const second = await serve(file, libs, ['--tracker-port', trackerPort, '--seeder-port', seederPort])
  t.teardown(second.stop)
  const r = await fetching
  t.equal(r.exitCode, 0, r.stderr)
  t.same(await snapshotTree(path.join(dir, 'out')), await snapshotTree(libs), 'every byte, from the restarted head')
  t.ok(await second.stop() > 0, 'the restarted head sent the rest')
})

/** Established TCP connections whose local port is `port` (the seeder's side). */
async function established (port: string): Promise<number> {
  const { stdout } = await promisify(execFile)('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`])
  return stdout.split('\n').filter((l) => l.trim() !== '').length
}

/** Polls `check` every 50 ms, at most 200 times: a bounded wait for an event we cannot subscribe to. */
async function waitFor (check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`gave up waiting: ${what}`)
}

for (const { seeder, args } of SEEDERS) {
  t.test(`a head started with the job's secret serves only the nodes that prove it (${seeder} seeder)`, async (t) => {
    const { dir, libs, file, infoHash } = await describedSet(t)
    const secret = randomBytes(32).toString('hex')
    const head = await serve(file, libs, args, secret)
    t.teardown(head.stop)
    // Anyone with the infohash: a BitTorrent handshake, then a request, without the job's proof.
    const got = await sendAndAwaitClose(head.seeder, Buffer.concat([handshake(infoHash), message(2), message(6, Buffer.alloc(12))]))
    t.equal(got.length, 68, 'the head answered the handshake, then closed: no bitfield, no block')
    await fetchSet(t, dir, file, head, 'member', [], { P2PRUN_SECRET: secret })
    t.same(await snapshotTree(path.join(dir, 'member')), await snapshotTree(libs), 'a node with the secret gets every byte')
    for (const [name, env] of [['stranger', { P2PRUN_SECRET: randomBytes(32).toString('hex') }], ['open-client', {}]] as const) {
      const r = await fetchFrom(dir, file, head, name, ['--stall-timeout', '2'], env)
      t.equal(r.exitCode, 1, `${name}: refused`)
      t.match(r.stderr, /no data arrived for 2 s/, `${name}: gets no byte`)
    }
    const stranger = await fetchFrom(dir, file, head, 'stranger2', ['--stall-timeout', '2'], { P2PRUN_SECRET: randomBytes(32).toString('hex') })
    t.match(stranger.stderr, /refused the announce: this tracker serves only its job's nodes/, 'and the tracker says why')
  })
}

t.test('a node holding a secret and an open head: the node says the head is not of its job', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const head = await serve(file, libs)
  t.teardown(head.stop)
  const r = await fetchFrom(dir, file, head, 'out', ['--stall-timeout', '2'], { P2PRUN_SECRET: randomBytes(32).toString('hex') })
  t.equal(r.exitCode, 1)
  const said = r.stderr.split('\n').filter((l) => l.includes('is it serving this job'))
  t.equal(said.length, 1, 'said once, not at every redial')
  t.match(said[0], /^p2prun fetch: warning: the seeder at 127\.0\.0\.1:\d+ is not of this job: .*with the same P2PRUN_SECRET/)
})

t.test('serve without a secret refuses to start unless told --open', async (t) => {
  const { libs, file } = await describedSet(t)
  const r = await p2prun(['serve', file, '--source', libs, '--host', '127.0.0.1'])
  t.equal(r.exitCode, 2)
  t.match(r.stderr, /^p2prun serve: error: no job secret: .*\(hint: export P2PRUN_SECRET=\$\(openssl rand -hex 32\) here and for the nodes, or pass --open/)
  const bad = await p2prun(['serve', file, '--source', libs, '--host', '127.0.0.1'], { env: { P2PRUN_SECRET: 'short' } })
  t.equal(bad.exitCode, 2)
  t.match(bad.stderr, /P2PRUN_SECRET is not a job secret/)
})

t.test('listeners bind only where told: the head to --host, a node to its interface toward the head', async (t) => {
  const { dir, libs, file, infoHash } = await describedSet(t)
  const head = await serve(file, libs, ['--upload-limit', String(1024 * 1024)])
  t.teardown(head.stop)
  const seederPort = portOf(head.seeder)
  const trackerPort = Number(new URL(head.tracker).port)
  t.ok(await accepts('127.0.0.1', seederPort), 'the seeder listens on 127.0.0.1')
  t.notOk(await accepts('127.0.0.2', seederPort), 'and on no other address of the host (127.0.0.2)')
  t.notOk(await accepts('127.0.0.2', trackerPort), 'nor does the tracker')
  const fetching = fetchFrom(dir, file, head, 'out')
  t.teardown(() => { fetching.kill() })
  let nodePort: number | undefined
  await waitFor(async () => {
    nodePort = (await announcePeer(head.tracker, infoHash, 9)).find((p) => p !== seederPort && p !== 9)
    return nodePort !== undefined
  }, 'the node announced')
  t.ok(await accepts('127.0.0.1', nodePort as number), 'the node listens toward its head (127.0.0.1)')
  t.notOk(await accepts('127.0.0.2', nodePort as number), 'and nowhere else')
  t.equal((await fetching).exitCode, 0)
})

t.test('endgame: a read stalled at one silent peer is asked of another before that peer times out', async (t) => {
  const { dir, libs, file, infoHash } = await describedSet(t)
  const head = await serve(file, libs)
  t.teardown(head.stop)
  const silent = await liar(t, infoHash, undefined, true)
  await announcePeer(head.tracker, infoHash, silent.port)
  const desc = parseDescription(await readFile(file))
  const node = await SwarmNode.join(desc, {
    storeDir: dir, port: 0, maxConns: 10, numwant: 10, stallTimeoutMs: 30_000, trackers: [head.tracker], seeders: [head.seeder]
  })
  t.teardown(() => node.close())
  // Both peers connected: the silent one, holding every piece, is asked first (the head is asked
  // only for pieces no other peer holds).
  await waitFor(async () => node.stats().peers === 2, 'the node connected to the head and the silent peer')
  const entry = desc.entries.find((e) => e.path === 'libtwo.so.1')
  if (!entry) throw new Error('libtwo.so.1 is not described')
  const into = Buffer.alloc(4096)
  t.equal(await node.read(entry, 100_000, into), 4096)
  t.same(into, bytesFor('libtwo.so.1', SET_FILES['libtwo.so.1']).subarray(100_000, 104_096), 'the right bytes')
  t.ok(silent.counts.requests > 0, `the silent peer was asked first (${silent.counts.requests} requests)`)
  t.equal(silent.counts.closed, 0, 'the read was answered while the silent peer was still connected: not by its request timeout')
})

t.test('peer exchange: a node that knows only the head\'s seeder finds the other nodes through it', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const secret = randomBytes(32).toString('hex')
  // A slow head, so the second node has reason to take what the first already has.
  const head = await serve(file, libs, ['--upload-limit', String(1536 * 1024)], secret)
  t.teardown(head.stop)
  const first = fetchFrom(dir, file, head, 'first', [], { P2PRUN_SECRET: secret })
  t.teardown(() => { first.kill() })
  await waitFor(async () => (await established(String(portOf(head.seeder)))) > 0, 'the first node reached the head')
  // No tracker at all: the only address it has is the head's seeder.
  const second = await p2prun(['fetch', file, '--out', path.join(dir, 'second'), '--seeder', head.seeder, '--store-dir', dir, '--json'],
    { env: { P2PRUN_SECRET: secret } })
  t.equal(second.exitCode, 0, second.stderr)
  const counters = JSON.parse(String(second.stdout).trim()) as { fromPeers: number }
  t.ok(counters.fromPeers > 0, `it got ${counters.fromPeers} bytes from the first node, which only the head could have named`)
  t.equal((await first).exitCode, 0)
  t.same(await snapshotTree(path.join(dir, 'second')), await snapshotTree(libs))
})

t.test('fallback to the source: a read the stalled swarm cannot serve comes from the source directory, checked', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const head = await serve(file, libs)
  t.teardown(head.stop)
  const desc = parseDescription(await readFile(file))
  const join = async (source: string, warnings: string[]) => {
    const node = await SwarmNode.join(desc, {
      storeDir: dir, port: 0, maxConns: 10, numwant: 10, stallTimeoutMs: 1000, trackers: [head.tracker], seeders: [head.seeder],
      fallback: { dirs: [{ name: '', dir: source }] }
    }, (line) => warnings.push(line))
    t.teardown(() => node.close())
    return node
  }
  const warned: string[] = []
  const node = await join(libs, warned)
  const unlucky = await join(path.join(dir, 'not-mounted-here'), [])
  head.child.kill('SIGKILL') // the head is gone, and no other node has anything
  await head.child
  const entry = desc.entries.find((e) => e.path === 'libtwo.so.1')
  if (!entry) throw new Error('libtwo.so.1 is not described')
  const into = Buffer.alloc(4096)
  t.equal(await node.read(entry, 1_000_000, into), 4096)
  t.same(into, bytesFor('libtwo.so.1', SET_FILES['libtwo.so.1']).subarray(1_000_000, 1_004_096), 'the right bytes')
  t.ok(node.stats().fromSource > 0, `${node.stats().fromSource} bytes from the source directory`)
  t.equal(await node.read(entry, 2_000_000, into), 4096, 'a second stalled read too')
  t.equal(warned.filter((l) => l.includes('reading what programs wait for from the source directory')).length, 1, 'said once')
  await t.rejects(unlucky.read(entry, 0, into), /no data arrived for 1 s .*and the source directory cannot stand in: .*ENOENT/,
    'where the source is not readable, the read fails as before, saying both')
})

for (const { seeder, args } of SEEDERS) {
  t.test(`idle connections from one address cannot fill the head's seeder (${seeder} seeder)`, async (t) => {
    const { dir, libs, file } = await describedSet(t)
    const head = await serve(file, libs, args)
    t.teardown(head.stop)
    const port = portOf(head.seeder)
    // 120 sockets that never say anything, from another address of this host (a node's cap, --max-conns, is 100).
    const idle: net.Socket[] = []
    t.teardown(() => { for (const s of idle) s.destroy() })
    let refused = 0
    await Promise.all(Array.from({ length: 120 }, () => new Promise<void>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => resolve())
      s.on('error', () => resolve())
      s.on('close', () => { refused++ })
      idle.push(s)
    })))
    await waitFor(async () => refused >= 120 - 8, 'the head closed all but 8 of the idle sockets')
    t.equal(refused, 112, 'all but 8 were closed at once')
    // Well inside the idle sockets' 10 s handshake timeout: the node from another address gets in.
    const r = await fetchFrom(dir, file, head, 'out', ['--stall-timeout', '5'])
    t.equal(r.exitCode, 0, r.stderr)
  })
}
