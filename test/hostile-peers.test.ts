// The head and the nodes against peers that break the protocol or lie, and against a head that
// goes away: real `p2prun serve` and `p2prun fetch` processes, hostile peers as raw TCP on loopback.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { parseDescription } from '../lib/description.ts'
import { bytesFor, makeTree, snapshotTree } from './helpers/fixtures.ts'
import { p2prun, serve, type Serving } from './helpers/cli.ts'

const SET_FILES = { 'libone.so.1': 3_000_000, 'libtwo.so.1': 2_500_000, 'sub/libthree.so': 1_700_000 }

async function describedSet (t: Test) {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, 'libs'), { files: SET_FILES })
  const file = path.join(dir, 'job.p2p.torrent')
  const r = await p2prun(['describe', libs, '-o', file])
  t.equal(r.exitCode, 0, r.stderr)
  const desc = parseDescription(await readFile(file))
  return { dir, libs, file, infoHash: Buffer.from(desc.infoHash, 'hex'), pieceCount: desc.pieceCount }
}

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b }
const message = (id: number, payload: Buffer = Buffer.alloc(0)) => Buffer.concat([u32(1 + payload.length), Buffer.from([id]), payload])
const handshake = (infoHash: Buffer, peerId = Buffer.from(`-XX0001-${randomBytes(6).toString('hex')}`)) =>
  Buffer.concat([Buffer.from('\x13BitTorrent protocol', 'latin1'), Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x04]), infoHash, peerId])

/**
 * Connects to host:port, sends `bytes` (then ends its side if `end`), and resolves once the
 * connection is closed: without `end`, only the other end can have closed it.
 */
function sendAndAwaitClose (address: string, bytes: Buffer, end = false): Promise<void> {
  const colon = address.lastIndexOf(':')
  return new Promise((resolve) => {
    const socket = net.connect(Number(address.slice(colon + 1)), address.slice(0, colon), () => {
      if (end) socket.end(bytes)
      else socket.write(bytes)
    })
    socket.on('data', () => {})
    socket.on('error', () => {}) // a reset is a close too
    socket.on('close', () => resolve())
  })
}

/** Whether a peer at host:port answers our handshake with its own for the same torrent. */
function answersHandshake (address: string, infoHash: Buffer): Promise<boolean> {
  const colon = address.lastIndexOf(':')
  return new Promise((resolve) => {
    let got = Buffer.alloc(0)
    const socket = net.connect(Number(address.slice(colon + 1)), address.slice(0, colon), () => socket.write(handshake(infoHash)))
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      if (got.length >= 68) { socket.destroy(); resolve(got.subarray(28, 48).equals(infoHash)) }
    })
    socket.on('error', () => resolve(false))
    socket.on('close', () => resolve(false))
  })
}

/**
 * A peer that says it has every piece and, after the handshake, either sends `opening` (hostile
 * bytes) or answers every request with random bytes. Counts its connections and the requests it got.
 */
async function liar (t: Test, infoHash: Buffer, opening?: Buffer) {
  const counts = { connections: 0, requests: 0 }
  const server = net.createServer((socket) => {
    counts.connections++
    socket.on('error', () => {})
    let buffered = Buffer.alloc(0)
    let shook = false
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      if (!shook) {
        if (buffered.length < 68) return
        shook = true
        buffered = buffered.subarray(68)
        socket.write(Buffer.concat([handshake(infoHash), message(0x0e), message(1), opening ?? Buffer.alloc(0)]))
      }
      while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
        const msg = buffered.subarray(4, 4 + buffered.readUInt32BE(0))
        buffered = buffered.subarray(4 + msg.length)
        if (msg[0] !== 6 || msg.length !== 13) continue
        counts.requests++
        socket.write(message(7, Buffer.concat([msg.subarray(1, 9), randomBytes(msg.readUInt32BE(9))])))
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return { port: (server.address() as net.AddressInfo).port, counts, server }
}

/** Lists a peer with the head's tracker, as any client that knows the infohash can today. */
async function announcePeer (tracker: string, infoHash: Buffer, port: number): Promise<void> {
  const pct = (b: Buffer) => [...b].map((x) => `%${x.toString(16).padStart(2, '0')}`).join('')
  const peerId = Buffer.from(`-XX0001-${randomBytes(6).toString('hex')}`)
  const res = await fetch(`${tracker}?info_hash=${pct(infoHash)}&peer_id=${pct(peerId)}&port=${port}` +
    '&uploaded=0&downloaded=0&left=0&event=started&compact=1')
  if (!res.ok) throw new Error(`announce: HTTP ${res.status}`)
}

async function fetchSet (t: Test, dir: string, file: string, head: Serving, name: string, extra: readonly string[] = []) {
  const r = await p2prun(['fetch', file, '--out', path.join(dir, name), '--tracker', head.tracker, '--seeder', head.seeder,
    '--store-dir', dir, ...extra])
  t.equal(r.exitCode, 0, `${name}: ${r.stderr}`)
  return r
}

t.test('the head survives every malformed message and still serves the set', async (t) => {
  const { dir, libs, file, infoHash } = await describedSet(t)
  const head = await serve(file, libs)
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

t.test('a source that changes while served (same size): the head says so once and sends no bad piece', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const head = await serve(file, libs)
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

t.test('a head that restarts on the same address is found again, and the fetch completes', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const first = await serve(file, libs, ['--upload-limit', String(1024 * 1024)])
  t.teardown(first.stop)
  const trackerPort = new URL(first.tracker).port
  const seederPort = first.seeder.slice(first.seeder.lastIndexOf(':') + 1)
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
