// The engine's pieces on their own: the peer wire protocol over a real loopback connection (the
// handshake, and a byte stream cut at every possible place, from a reused read buffer), and the
// assembly of pieces from blocks.
import { createHash, randomBytes } from 'node:crypto'
import net from 'node:net'
import t, { type Test } from 'tap'
import { Assembly } from '../lib/swarm/assembly.ts'
import { Bitfield } from '../lib/swarm/bitfield.ts'
import { setRcvLowat } from '../lib/swarm/low-water.ts'
import { BLOCK_LENGTH, haveMessage, Wire, type BlockRequest, type WireHandler } from '../lib/swarm/wire.ts'

const INFO_HASH = randomBytes(20)
const PIECES = 20

/** A connected pair of sockets on loopback, destroyed at the end of the test. */
async function socketPair (t: Test): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
  const dialed = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  const other = await accepted
  t.teardown(() => { dialed.destroy(); other.destroy(); server.close() })
  return [dialed, other]
}

const wireOn = (socket: net.Socket, outgoing: boolean, infoHash = INFO_HASH, peerId = randomBytes(20)) =>
  new Wire(socket, { infoHash, peerId, pieceCount: PIECES, outgoing, timeoutMs: 5000 })

/** Records what a wire hands its owner. */
function recorder () {
  const seen: string[] = []
  const blocks: Buffer[] = []
  const handler: WireHandler = {
    onPieces: (w, i) => seen.push(i === undefined ? `pieces ${w.peerPieces.count}` : `have ${i}`),
    onChoke: (w) => seen.push(w.peerChoking ? 'choke' : 'unchoke'),
    onInterested: () => seen.push('interested'),
    onRequest: (_w, r) => seen.push(`request ${r.index}/${r.begin}/${r.length}`),
    onBlock: (_w, r, data) => { seen.push(`block ${r.index}/${r.begin}/${data.length}`); blocks.push(Buffer.from(data)) },
    onReject: (_w, r) => seen.push(`reject ${r.index}/${r.begin}`),
    onClose: () => seen.push('close')
  }
  return { seen, blocks, handler }
}

t.test('handshake: both ends learn the other\'s id and the Fast Extension; another torrent is refused', async (t) => {
  const [a, b] = await socketPair(t)
  const ids = [randomBytes(20), randomBytes(20)]
  const dialer = wireOn(a, true, INFO_HASH, ids[0])
  const listener = wireOn(b, false, INFO_HASH, ids[1])
  b.on('data', (c: Buffer) => listener.receive(c, false))
  a.on('data', (c: Buffer) => dialer.receive(c, false))
  await Promise.all([dialer.ready, listener.ready])
  t.equal(dialer.peerId, ids[1]?.toString('hex'))
  t.equal(listener.peerId, ids[0]?.toString('hex'))
  t.ok(dialer.fast && listener.fast, 'both speak BEP 6')

  const [c, d] = await socketPair(t)
  const stranger = wireOn(c, true, randomBytes(20))
  const refusing = wireOn(d, false)
  d.on('data', (chunk: Buffer) => refusing.receive(chunk, false))
  c.on('data', (chunk: Buffer) => stranger.receive(chunk, false))
  await t.rejects(refusing.ready, /another torrent/)
  await t.rejects(stranger.ready, /closed/)
})

t.test('every message arrives whole however the stream is cut, also from a reused read buffer', async (t) => {
  const [a, b] = await socketPair(t)
  const sender = wireOn(a, true)
  // What the sender writes (its handshake, then messages), captured instead of parsed.
  const sent: Buffer[] = []
  let length = 0
  const have = new Bitfield(PIECES)
  for (const i of [0, 3, 19]) have.set(i)
  const block = randomBytes(BLOCK_LENGTH)
  const req: BlockRequest = { index: 3, begin: BLOCK_LENGTH, length: BLOCK_LENGTH }
  // handshake, bitfield (no BEP 6 before the peer's handshake), have, interested, unchoke, request, piece
  const expected = 68 + 8 + 9 + 5 + 5 + 17 + 13 + BLOCK_LENGTH
  const captured = new Promise<void>((resolve) => b.on('data', (c: Buffer) => { sent.push(c); length += c.length; if (length >= expected) resolve() }))
  sender.sendPieces(have)
  sender.have(haveMessage(7))
  sender.interested(true)
  sender.unchoke()
  sender.request(req)
  sender.piece(req, block)
  await captured
  const stream = Buffer.concat(sent)
  t.equal(stream.length, expected)

  for (const borrowed of [false, true]) {
    for (const cut of [1, 3, 17, 68, 1000, stream.length]) {
      const [, d] = await socketPair(t)
      const wire = wireOn(d, false)
      const { seen, blocks, handler } = recorder()
      const reused = Buffer.alloc(cut)
      for (let off = 0; off < stream.length; off += cut) {
        const piece = stream.subarray(off, off + cut)
        if (borrowed) {
          piece.copy(reused)
          wire.receive(reused.subarray(0, piece.length), true)
          reused.fill(0xee) // what a wire kept of a borrowed chunk must be its own copy
        } else {
          wire.receive(Buffer.from(piece), false)
        }
      }
      await wire.ready
      // The block is an answer only to a request of ours; messages wait for attach.
      wire.outstanding.push({ ...req, at: performance.now() })
      wire.outstandingBytes += req.length
      wire.attach(handler)
      t.same(seen, ['pieces 3', 'have 7', 'interested', 'unchoke', `request 3/${BLOCK_LENGTH}/${BLOCK_LENGTH}`,
        `block 3/${BLOCK_LENGTH}/${BLOCK_LENGTH}`], `cut every ${cut} bytes${borrowed ? ', borrowed' : ''}`)
      t.ok(blocks[0]?.equals(block), 'the block\'s bytes')
      t.equal(wire.outstandingBytes, 0, 'the answered request is settled')
    }
  }
})

t.test('a piece message trickling in wakes the reader once its body is whole, not per segment (SO_RCVLOWAT)', async (t) => {
  t.ok(setRcvLowat, 'the native helper is built into dist/ (scripts/build.ts)')
  const setter = setRcvLowat as NonNullable<typeof setRcvLowat>
  const block = randomBytes(4 * BLOCK_LENGTH)
  const req: BlockRequest = { index: 2, begin: 0, length: block.length }
  const message = Buffer.alloc(13)
  message.writeUInt32BE(9 + block.length, 0)
  message[4] = 7
  message.writeUInt32BE(req.index, 5)
  const stream = Buffer.concat([message, block])
  const reads: Record<string, number> = {}
  for (const mode of ['per segment', 'low-water'] as const) {
    const [a, b] = await socketPair(t)
    const sender = wireOn(a, true)
    const wire = new Wire(b, {
      infoHash: INFO_HASH, peerId: randomBytes(20), pieceCount: PIECES, outgoing: false, timeoutMs: 5000,
      lowWater: mode === 'low-water' ? (n) => setter(b, n) : undefined
    })
    let count = 0
    b.on('data', (c: Buffer) => { count++; wire.receive(c, false) })
    a.on('data', (c: Buffer) => sender.receive(c, false))
    await Promise.all([wire.ready, sender.ready])
    wire.outstanding.push({ ...req, at: performance.now() })
    wire.outstandingBytes += req.length
    const { blocks, handler } = recorder()
    wire.attach(handler)
    count = 0
    // 1 KiB per event-loop turn: each write is a segment of its own, as on a slow link.
    for (let off = 0; off < stream.length; off += 1024) {
      a.write(stream.subarray(off, off + 1024))
      await new Promise((resolve) => setImmediate(resolve))
    }
    while (blocks.length === 0) await new Promise((resolve) => b.once('data', resolve))
    t.ok(blocks[0]?.equals(block), `${mode}: the block arrived whole`)
    reads[mode] = count
  }
  t.ok((reads['low-water'] ?? Infinity) <= 4, `with the low-water mark: ${reads['low-water']} reads`)
  t.ok((reads['per segment'] ?? 0) >= 16, `without: ${reads['per segment']} reads`)
})

t.test('assembly: runs of blocks up to a request size, releases, a failed check starts the piece over', async (t) => {
  const pieceLength = 4 * BLOCK_LENGTH
  const data = randomBytes(2 * pieceLength + 1000) // the last piece is one short block
  const hashes = Buffer.concat([0, 1, 2].map((i) => createHash('sha1').update(data.subarray(i * pieceLength, (i + 1) * pieceLength)).digest()))
  const store = Buffer.alloc(data.length)
  const a = new Assembly({ pieceLength, pieceCount: 3, totalBytes: data.length, pieceHashes: hashes }, store)
  const whole = a.reserve(0, 4 * BLOCK_LENGTH)
  t.same(whole, { index: 0, begin: 0, length: pieceLength }, 'one request for the whole piece')
  t.equal(a.reserve(0, pieceLength), undefined, 'nothing left to ask for')
  a.release(whole as BlockRequest)
  const first = a.reserve(0, BLOCK_LENGTH) as BlockRequest
  const rest = a.reserve(0, 4 * BLOCK_LENGTH) as BlockRequest
  t.same([first.length, rest.begin, rest.length], [BLOCK_LENGTH, BLOCK_LENGTH, 3 * BLOCK_LENGTH], 'a released run is asked for again, in other sizes')
  t.same(a.receive(rest, data.subarray(rest.begin, rest.begin + rest.length), 'peer-a'), { state: 'partial' })
  const got = a.receive(first, data.subarray(0, BLOCK_LENGTH), 'peer-b')
  t.equal(got.state, 'verified')
  t.ok(store.subarray(0, pieceLength).equals(data.subarray(0, pieceLength)), 'the piece\'s bytes are in their place in the set')
  t.ok(store.subarray(pieceLength).equals(Buffer.alloc(data.length - pieceLength)), 'and nothing else was written')
  t.equal(a.reserve(0, pieceLength), undefined, 'a verified piece is never asked for again')

  const last = a.reserve(2, pieceLength) as BlockRequest
  t.same(last, { index: 2, begin: 0, length: 1000 }, 'the last piece is as long as what is left')
  t.same(a.receive(last, randomBytes(1000), 'peer-c'), { state: 'failed', from: ['peer-c'] }, 'wrong bytes fail the check, naming their sender')
  t.same(a.reserve(2, pieceLength), { index: 2, begin: 0, length: 1000 }, 'and the piece is asked for anew')
})

t.test('a peer owes an answer since our oldest request, or since its last answer if later: one answering late but steadily is not silent', async (t) => {
  const [a, b] = await socketPair(t)
  const asking = wireOn(a, true)
  const asked = wireOn(b, false)
  b.on('data', (c: Buffer) => asked.receive(c, false))
  a.on('data', (c: Buffer) => asking.receive(c, false))
  await Promise.all([asking.ready, asked.ready])
  const ours = recorder()
  const theirs = recorder()
  asking.attach(ours.handler)
  asked.attach(theirs.handler)
  const until = async (seen: string[], what: string) => { while (!seen.includes(what)) await new Promise((resolve) => setImmediate(resolve)) }

  t.equal(asking.owesSince(), undefined, 'nothing asked, nothing owed')
  const first = { index: 1, begin: 0, length: BLOCK_LENGTH }
  const second = { index: 1, begin: BLOCK_LENGTH, length: BLOCK_LENGTH }
  asking.request(first)
  asking.request(second)
  const asked1 = asking.outstanding[0]?.at as number
  t.equal(asking.owesSince(), asked1, 'owed since the oldest request')
  await until(theirs.seen, `request 1/${BLOCK_LENGTH}/${BLOCK_LENGTH}`)

  const beforeBlock = performance.now()
  asked.piece(first, randomBytes(BLOCK_LENGTH))
  await until(ours.seen, `block 1/0/${BLOCK_LENGTH}`)
  t.ok((asking.owesSince() as number) >= beforeBlock, 'once it answers one, owed only since that answer, though the second request is older')
  t.ok((asking.owesSince() as number) > asked1)
  asked.reject(second)
  await until(ours.seen, `reject 1/${BLOCK_LENGTH}`)
  t.equal(asking.owesSince(), undefined, 'a reject answers too: nothing owed')
})
