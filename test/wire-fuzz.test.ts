// The wire's parser under hostile input: known bad messages cut at every size, and seeded random
// and mutated message streams, each fed to a wire on a real loopback connection. No input may
// throw out of `receive` (in a process it would be a socket callback with nothing above it); a
// broken message ends the connection with a reason that names it; well-formed streams go through.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import t from 'tap'
import { DESC_ID, encodeDescMessage, encodeExtensionHandshake, encodePex, UT_PEX_ID, type DescMessage } from '../lib/swarm/extensions.ts'
import { newJobSecret, proof } from '../lib/swarm/job-auth.ts'
import { Wire, type WireHandler } from '../lib/swarm/wire.ts'
import { generator, mutate, randomBytesFrom } from './helpers/fuzz.ts'
import { acceptedSockets as sockets, handshake, message, u32 } from './helpers/peer-wire.ts'

const INFO_HASH = randomBytes(20)
const PIECES = 20
const BITFIELD_BYTES = Math.ceil(PIECES / 8)

/** Every message a peer may send to a wire of PIECES pieces, well formed. */
function validMessages (rand: () => number): Buffer[] {
  const index = () => Math.floor(rand() * PIECES)
  const triple = () => Buffer.concat([u32(index()), u32(Math.floor(rand() * 4) * 16384), u32(16384)])
  return [
    message(0), message(1), message(2), message(3), message(4, u32(index())),
    message(5, Buffer.from([0xff, 0x0f, 0xf0])), message(6, triple()), message(8, triple()),
    message(7, Buffer.concat([u32(index()), u32(0), Buffer.alloc(Math.floor(rand() * 64))])), // unasked: dropped
    message(0x0e), message(0x0f), message(0x10, triple()),
    message(20, Buffer.from('d1:md11:ut_metadatai1eee')), // an extension we did not announce: ignored
    u32(0) // keep-alive
  ]
}

/** A handler that counts what it is told; `throwOn` makes one callback fail, as a bug in an owner would. */
function counting (throwOn?: keyof WireHandler) {
  let calls = 0
  const count = (name: keyof WireHandler) => () => {
    calls++
    if (name === throwOn) throw new Error(`${name} failed`)
  }
  const handler: WireHandler = {
    onPieces: count('onPieces'), onChoke: count('onChoke'), onInterested: count('onInterested'), onRequest: count('onRequest'),
    onBlock: count('onBlock'), onReject: count('onReject'), onClose: () => {}
  }
  return { handler, calls: () => calls }
}

/** A listening wire past the handshake, with its handler attached. */
async function shookWire (socket: () => Promise<net.Socket>, fast: boolean, handler: WireHandler): Promise<Wire> {
  const wire = new Wire(await socket(), { infoHash: INFO_HASH, peerId: randomBytes(20), pieceCount: PIECES, outgoing: false, timeoutMs: 5000 })
  wire.receive(handshake(INFO_HASH, { fast }), false)
  await wire.ready
  wire.attach(handler)
  return wire
}

/** Feeds a stream in pieces of `cut` bytes, half of the time from one reused read buffer. */
function feed (wire: Wire, stream: Buffer, cut: number, borrowed: boolean): void {
  const reused = Buffer.alloc(cut)
  for (let off = 0; off < stream.length; off += cut) {
    const chunk = stream.subarray(off, off + cut)
    if (!borrowed) { wire.receive(Buffer.from(chunk), false); continue }
    chunk.copy(reused)
    wire.receive(reused.subarray(0, chunk.length), true)
    reused.fill(0xee)
  }
}

t.test('each known bad message ends the connection with its reason, however it is cut', async (t) => {
  const socket = await sockets(t)
  const cases: Array<[string, Buffer, RegExp, boolean]> = [
    ['a have without its index (crashed the head)', Buffer.from('0000000104', 'hex'), /message 4 of 1 bytes, not 5/, true],
    ['a have of a piece past the end', message(4, u32(PIECES)), /has piece 20 of 20/, true],
    ['a bitfield too short', message(5, Buffer.from([0xff])), /bitfield of 1 bytes for 20 pieces/, true],
    ['a bitfield too long', message(5, Buffer.alloc(BITFIELD_BYTES + 1)), /bitfield of 4 bytes/, true],
    ['a request of 12 bytes', message(6, Buffer.alloc(11)), /message 6 of 12 bytes, not 13/, true],
    ['a piece without its header', message(7, Buffer.alloc(4)), /piece message of 5 bytes/, true],
    ['a choke with a payload', message(0, Buffer.alloc(3)), /message 0 of 4 bytes, not 1/, true],
    ['a message of 4 GiB', u32(0xffffffff), /message of 4294967295 bytes/, true],
    ['have-all from a peer without the Fast Extension', message(0x0e), /Fast Extension, which it did not announce/, false],
    ['a reject from a peer without the Fast Extension', message(0x10, Buffer.alloc(12)), /Fast Extension/, false]
  ]
  for (const [name, bad, reason, fast] of cases) {
    // A well-formed message first: the bad one may start anywhere in a read.
    const stream = Buffer.concat([message(2), bad, message(1)])
    for (let cut = 1; cut <= stream.length; cut++) {
      const { handler, calls } = counting()
      const wire = await shookWire(socket, fast, handler)
      feed(wire, stream, cut, cut % 2 === 0)
      if (!wire.destroyed || !reason.test(wire.closeReason ?? '') || calls() !== 1) {
        t.fail(`${name}, cut every ${cut} bytes: destroyed=${wire.destroyed} reason=${wire.closeReason} calls=${calls()}`)
        return
      }
    }
    t.pass(`${name}: refused at every cut`)
  }
})

t.test('seeded random and mutated streams: no throw; valid streams pass whole, broken ones end with a reason', async (t) => {
  const socket = await sockets(t)
  const seed = Number(process.env.P2PRUN_FUZZ_SEED ?? 20261201)
  const rand = generator(seed)
  let valid = 0
  let refused = 0
  for (let round = 0; round < 400; round++) {
    const corpus = validMessages(rand)
    const count = 1 + Math.floor(rand() * 8)
    let broken = false
    const parts: Buffer[] = []
    for (let i = 0; i < count; i++) {
      const msg = corpus[Math.floor(rand() * corpus.length)] as Buffer
      if (rand() < 0.3) { parts.push(mutate(msg, rand)); broken = true } else parts.push(msg)
    }
    const stream = Buffer.concat(parts)
    const { handler } = counting()
    const wire = await shookWire(socket, true, handler)
    const cut = 1 + Math.floor(rand() * Math.max(1, stream.length))
    feed(wire, stream, cut, rand() < 0.5) // a throw here fails the test, naming the seed below
    if (!broken && wire.destroyed) {
      t.fail(`seed ${seed} round ${round}: a valid stream was refused: ${wire.closeReason}`)
      return
    }
    if (wire.destroyed && !wire.closeReason) {
      t.fail(`seed ${seed} round ${round}: closed without a reason`)
      return
    }
    if (broken) { if (wire.destroyed) refused++ } else valid++
  }
  t.ok(valid > 50, `${valid} valid streams went through`)
  t.ok(refused > 50, `${refused} broken streams ended their connection`)
})

t.test('a handler that throws ends only that connection', async (t) => {
  const socket = await sockets(t)
  const { handler } = counting('onRequest')
  const wire = await shookWire(socket, true, handler)
  wire.receive(message(6, Buffer.concat([u32(1), u32(0), u32(16384)])), false)
  t.ok(wire.destroyed, 'the connection is closed')
  t.match(wire.closeReason, /failed on the peer's data: onRequest failed/)
})

t.test('job proofs and peer exchange: malformed extension messages end the connection or are ignored, never thrown', async (t) => {
  const socket = await sockets(t)
  const secret = newJobSecret()
  const rand = generator(7)
  const ownId = randomBytes(20)
  const open = async (peerId: Buffer) => {
    const wire = new Wire(await socket(), { infoHash: INFO_HASH, peerId: ownId, pieceCount: PIECES, outgoing: false, timeoutMs: 5000, secret, listenPort: 6881 })
    wire.ready.catch(() => {})
    wire.receive(handshake(INFO_HASH, { extensions: true, peerId }), false)
    return wire
  }
  let refused = 0
  for (let round = 0; round < 200; round++) {
    const peerId = randomBytes(20)
    const wire = await open(peerId)
    const good = encodeExtensionHandshake(proof(secret, 'peer', INFO_HASH, peerId, ownId), 7000)
    const payload = round % 2 === 0 ? mutate(Buffer.concat([u32(1 + good.length), Buffer.from([20]), good]), rand) : randomBytesFrom(rand, 1 + Math.floor(rand() * 60))
    feed(wire, payload, 1 + Math.floor(rand() * 16), rand() < 0.5)
    if (wire.destroyed) refused++
  }
  t.ok(refused > 100, `${refused} of 200 bad proofs ended their connection; none threw`)
  const peerId = randomBytes(20)
  const wire = await open(peerId)
  const good = encodeExtensionHandshake(proof(secret, 'peer', INFO_HASH, peerId, ownId), 7000)
  wire.receive(Buffer.concat([u32(1 + good.length), Buffer.from([20]), good]), false)
  await wire.ready
  t.equal(wire.listenPort, 7000, 'a good proof opens the connection and names the peer\'s port')
  const told: string[][] = []
  const asked: DescMessage[] = []
  wire.attach({ ...counting().handler, onPex: (_w, addresses) => { told.push(addresses) }, onDesc: (_w, msg) => { asked.push(msg) } })
  for (let i = 0; i < 200; i++) {
    const body = i % 2 === 0 ? mutate(encodePex(UT_PEX_ID, ['10.0.0.1:7000', '10.0.0.2:7001']), rand) : randomBytesFrom(rand, Math.floor(rand() * 40))
    wire.receive(Buffer.concat([u32(1 + body.length), Buffer.from([20]), body]), false)
    if (wire.destroyed) break
  }
  const last = encodePex(UT_PEX_ID, ['10.0.0.3:7002'])
  wire.receive(Buffer.concat([u32(1 + last.length), Buffer.from([20]), last]), false)
  t.ok(told.some((a) => a.includes('10.0.0.3:7002')), 'a good peer exchange message still gets through')
  for (let i = 0; i < 200; i++) {
    const good = encodeDescMessage(DESC_ID, i % 4 === 0 ? { type: 'data', piece: 0, totalSize: 40, data: randomBytes(40) } : { type: 'request', piece: i })
    const body = i % 2 === 0 ? mutate(good, rand) : randomBytesFrom(rand, Math.floor(rand() * 60))
    wire.receive(Buffer.concat([u32(1 + body.length), Buffer.from([20]), body]), false)
  }
  t.notOk(wire.destroyed, '200 malformed description messages: ignored, the connection stands')
  const request = encodeDescMessage(DESC_ID, { type: 'request', piece: 7 })
  wire.receive(Buffer.concat([u32(1 + request.length), Buffer.from([20]), request]), false)
  t.same(asked.at(-1), { type: 'request', piece: 7 }, 'a good description request still gets through')
})
