// A node's connection in the addon's hands (native/peer-stream.c) after its handshake, over a real
// loopback connection whose other end this test writes byte by byte: blocks asked for land in their
// place in the store, and nothing a peer sends lands anywhere else.
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import t, { type Test } from 'tap'
import { requireNative } from '../lib/native.ts'
import { Bitfield } from '../lib/swarm/bitfield.ts'
import { BLOCK_LENGTH, haveMessage, Wire, type WireHandler } from '../lib/swarm/wire.ts'
import { generator, mutate, randomBytesFrom } from './helpers/fuzz.ts'
import { message, u32 } from './helpers/peer-wire.ts'

const INFO_HASH = randomBytes(20)
const PIECES = 8
const PIECE_LENGTH = 4 * BLOCK_LENGTH

/** A wire handed over to the addon on one end; the other end is a bare socket the test speaks through. */
async function handedOver (t: Test) {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  const peer = await accepted
  peer.setNoDelay(true)
  t.teardown(() => { socket.destroy(); peer.destroy(); server.close() })
  // The store as a node has it: a file in node-local memory, mapped; the addon writes blocks to the
  // file, and the test reads them through the mapping.
  const dir = mkdtempSync('/dev/shm/p2prun-peer-stream-test-')
  const fd = openSync(path.join(dir, 'store'), 'w+')
  t.teardown(() => { closeSync(fd); rmSync(dir, { recursive: true, force: true }) })
  const store = requireNative('the peer stream test', (m, hint) => new Error(`${m} (${hint})`)).mapStore(fd, PIECES * PIECE_LENGTH)
  const have = new Bitfield(PIECES)
  const wire = new Wire(socket, {
    infoHash: INFO_HASH, peerId: randomBytes(20), pieceCount: PIECES, outgoing: true, timeoutMs: 5000,
    store: { bytes: store, fd, pieceLength: PIECE_LENGTH, have: have.bytes }
  })
  t.teardown(() => wire.destroy())
  socket.on('data', (chunk: Buffer) => wire.receive(chunk, false))
  const received: Buffer[] = []
  peer.on('data', (chunk: Buffer) => received.push(chunk))
  const seen: string[] = []
  const blocks: Buffer[] = []
  const closed = new Promise<void>((resolve) => {
    const handler: WireHandler = {
      onPieces: (_w, i) => seen.push(i === undefined ? 'pieces' : `have ${i}`),
      onChoke: () => {},
      onInterested: () => seen.push('interested'),
      onRequest: (_w, r) => seen.push(`request ${r.index}/${r.begin}`),
      onBlock: (_w, r, data) => { seen.push(`block ${r.index}/${r.begin}/${data.length}`); blocks.push(data) },
      onReject: (_w, r) => seen.push(`reject ${r.index}/${r.begin}`),
      onClose: () => { seen.push('close'); resolve() }
    }
    wire.ready.then(() => wire.attach(handler), () => {})
  })
  // The peer's handshake (with BEP 6) and, in the same write, its first message: read by Node with
  // the handshake, handed to the addon with the connection.
  const handshake = Buffer.concat([Buffer.from('\x13BitTorrent protocol', 'latin1'), Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x04]), INFO_HASH, randomBytes(20)])
  peer.write(Buffer.concat([handshake, message(4, u32(6))]))
  await wire.ready
  // Node's socket closes once the addon holds the connection.
  await once(socket, 'close')
  /** Waits until the wire has handed over `n` events in all. */
  const events = async (n: number) => { while (seen.length < n && !wire.destroyed) await new Promise((resolve) => setImmediate(resolve)) }
  return { wire, peer, store, have, seen, blocks, closed, received, events }
}

function piece (index: number, begin: number, data: Buffer): Buffer {
  return message(7, Buffer.concat([u32(index), u32(begin), data]))
}

/** Writes `bytes` cut at `cuts`, each part in a loop turn of its own (separate segments, most often separate reads). */
async function writeCut (socket: net.Socket, bytes: Buffer, cuts: number[]): Promise<void> {
  let from = 0
  for (const cut of [...cuts, bytes.length]) {
    socket.write(bytes.subarray(from, cut))
    from = cut
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

t.test('a block asked for lands in its place in the store, however it is cut; the peer\'s first message arrives with the connection', async (t) => {
  const { wire, peer, store, seen, blocks, events } = await handedOver(t)
  await events(1)
  t.same(seen, ['have 6'], 'the message sent with the handshake')
  const data = randomBytes(BLOCK_LENGTH)
  wire.request({ index: 2, begin: BLOCK_LENGTH, length: BLOCK_LENGTH })
  // Cut inside the length, inside the header and inside the block.
  await writeCut(peer, piece(2, BLOCK_LENGTH, data), [2, 7, 13 + 100, 13 + 9000])
  await events(2)
  t.same(seen, ['have 6', `block 2/${BLOCK_LENGTH}/${BLOCK_LENGTH}`])
  const at = 2 * PIECE_LENGTH + BLOCK_LENGTH
  t.ok(store.subarray(at, at + BLOCK_LENGTH).equals(data), 'the block is in its place')
  t.ok(blocks[0]?.buffer === store.buffer && blocks[0]?.byteOffset === store.byteOffset + at, 'handed over as a view of the store, not a copy')
  t.equal(wire.outstanding.length, 0, 'the request is settled')
})

t.test('nothing a peer sends lands in the store unless asked for and not yet verified, and every request answered is settled; a fake record of the addon is dropped', async (t) => {
  const { wire, peer, store, have, seen, events } = await handedOver(t)
  await events(1)
  // Not asked for.
  peer.write(piece(0, 0, Buffer.alloc(BLOCK_LENGTH, 0xaa)))
  // Asked for, but its piece was verified meanwhile (the node's have bitfield, shared with the
  // addon): not written, but the request is settled, as a late copy of an endgame block is.
  wire.request({ index: 3, begin: 0, length: BLOCK_LENGTH })
  have.set(3)
  peer.write(piece(3, 0, Buffer.alloc(BLOCK_LENGTH, 0xbb)))
  // Asked for, and answered by a message with the addon's own id (0xff) instead of a piece.
  wire.request({ index: 4, begin: 0, length: BLOCK_LENGTH })
  peer.write(message(0xff, Buffer.concat([u32(4), u32(0), u32(BLOCK_LENGTH)])))
  // Then an ordinary message: everything before it was framed.
  peer.write(message(4, u32(5)))
  await events(3)
  t.same(seen, ['have 6', `block 3/0/${BLOCK_LENGTH}`, 'have 5'], 'the verified piece\'s request is settled; no other block handed over')
  t.ok(store.equals(Buffer.alloc(store.length)), 'the store is untouched')
  t.same(wire.outstanding.map((r) => r.index), [4], 'the request answered with the fake record still waits (its timeout drops the peer)')
  // A reject settles a request in the addon too: the block that follows is dropped.
  peer.write(message(0x10, Buffer.concat([u32(4), u32(0), u32(BLOCK_LENGTH)])))
  peer.write(piece(4, 0, Buffer.alloc(BLOCK_LENGTH, 0xcc)))
  peer.write(message(4, u32(7)))
  await events(5)
  t.same(seen.slice(3), ['reject 4/0', 'have 7'])
  t.ok(store.equals(Buffer.alloc(store.length)), 'still untouched')
})

t.test('a message longer than any the wire takes ends the connection, with the reason', async (t) => {
  const { wire, peer, seen, closed } = await handedOver(t)
  peer.write(Buffer.concat([u32(1 << 24), Buffer.from([7])]))
  await closed
  t.equal(seen.at(-1), 'close')
  t.equal(wire.closeReason, `sent a message of ${1 << 24} bytes`)
})

t.test('what the wire sends goes out in order, a served block from the store; the peer closing ends the wire once', async (t) => {
  const { wire, peer, store, seen, closed, received } = await handedOver(t)
  store.fill(0x5a, PIECE_LENGTH, 2 * PIECE_LENGTH)
  wire.have(haveMessage(1))
  wire.piece({ index: 1, begin: BLOCK_LENGTH, length: BLOCK_LENGTH }, store.subarray(PIECE_LENGTH + BLOCK_LENGTH, PIECE_LENGTH + 2 * BLOCK_LENGTH))
  wire.interested(true)
  const expected = Buffer.concat([message(4, u32(1)), piece(1, BLOCK_LENGTH, Buffer.alloc(BLOCK_LENGTH, 0x5a)), message(2)])
  // After the dialer's handshake (68 bytes) and what it sent before the hand-over (nothing here).
  while (Buffer.concat(received).length < 68 + expected.length) await once(peer, 'data')
  t.ok(Buffer.concat(received).subarray(68).equals(expected), 'have, piece, interested: byte for byte')
  peer.end()
  await closed
  t.equal(seen.filter((s) => s === 'close').length, 1)
  t.equal(wire.closeReason, 'closed')
})

t.test('served blocks and messages keep their order when the peer stops reading and the socket fills, and all arrive once it reads again', async (t) => {
  const { wire, peer, store, received } = await handedOver(t)
  for (let i = 0; i < PIECES; i++) store.fill(i + 1, i * PIECE_LENGTH, (i + 1) * PIECE_LENGTH)
  peer.pause()
  // 16 MiB and more: past what the two ends' socket buffers hold, so part of it is sent at once
  // and the rest waits, over several loop turns, behind what could not go.
  const expected: Buffer[] = []
  for (let turn = 0; turn < 8; turn++) {
    for (let k = 0; k < 40; k++) {
      const index = (turn * 40 + k) % PIECES
      wire.have(haveMessage(index))
      wire.piece({ index, begin: 0, length: PIECE_LENGTH }, store.subarray(index * PIECE_LENGTH, (index + 1) * PIECE_LENGTH))
      expected.push(message(4, u32(index)), piece(index, 0, Buffer.alloc(PIECE_LENGTH, index + 1)))
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
  const want = Buffer.concat(expected)
  t.ok(want.length > 16 * 1024 * 1024, 'more than the socket buffers hold')
  peer.resume()
  let got = 0
  while ((got = received.reduce((n, b) => n + b.length, 0)) < 68 + want.length) await once(peer, 'data')
  t.equal(got, 68 + want.length, 'nothing more than was sent')
  t.ok(Buffer.concat(received).subarray(68).equals(want), 'every have and piece, byte for byte, in order')
  t.notOk(wire.destroyed)
})

t.test('seeded random and mutated streams through the addon: the process lives, valid streams pass whole, nothing lands in the store', async (t) => {
  const seed = Number(process.env.P2PRUN_FUZZ_SEED ?? 20261202)
  const rand = generator(seed)
  const index = () => Math.floor(rand() * PIECES)
  const triple = () => Buffer.concat([u32(index()), u32(Math.floor(rand() * 4) * BLOCK_LENGTH), u32(BLOCK_LENGTH)])
  const corpus = () => [
    message(0), message(1), message(2), message(3), message(4, u32(index())), message(5, Buffer.from([0xa5])),
    message(6, triple()), message(8, triple()), message(0x0e), message(0x0f), message(0x10, triple()),
    piece(index(), 0, randomBytesFrom(rand, Math.floor(rand() * 3000))), // not asked for: dropped
    message(0xff, triple()), // the addon's own record, from a peer: dropped
    message(20, Buffer.from('d1:md11:ut_metadatai1eee')), u32(0)
  ]
  let valid = 0
  let refused = 0
  for (let round = 0; round < 60; round++) {
    const { wire, peer, store, seen, closed } = await handedOver(t)
    let broken = false
    const parts: Buffer[] = []
    for (let i = 0, n = 1 + Math.floor(rand() * 8); i < n; i++) {
      const all = corpus()
      const msg = all[Math.floor(rand() * all.length)] as Buffer
      if (rand() < 0.3) { parts.push(mutate(msg, rand)); broken = true } else parts.push(msg)
    }
    // A request no corpus message makes marks the stream's end; the peer then closes.
    peer.end(Buffer.concat([...parts, message(6, Buffer.concat([u32(PIECES - 1), u32(12345), u32(BLOCK_LENGTH)]))]))
    await closed
    if (!store.equals(Buffer.alloc(store.length))) return t.fail(`seed ${seed} round ${round}: a peer's bytes landed in the store`)
    if (!broken && (wire.closeReason !== 'closed' || !seen.includes(`request ${PIECES - 1}/12345`))) {
      return t.fail(`seed ${seed} round ${round}: a valid stream did not pass whole: ${wire.closeReason}`)
    }
    if (broken) { if (wire.closeReason !== 'closed') refused++ } else valid++
  }
  t.ok(valid > 5, `${valid} valid streams went through`)
  t.ok(refused > 5, `${refused} broken streams ended their connection with a reason`)
})
