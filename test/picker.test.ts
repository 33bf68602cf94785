// The piece picker of a swarm node, over real wires to peers the test plays by hand: what it asks of
// whom and in which order, counted, with no reliance on how fast anything runs; the endgame with a
// clock the test steps; and the fan-out rule the node and the head serve by. (Whole fetches over a
// real seeder are swarm.test.ts's.)
import { createHash, randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { Assembly } from '../lib/swarm/assembly.ts'
import { Bitfield } from '../lib/swarm/bitfield.ts'
import { FanOut } from '../lib/swarm/fan-out.ts'
import { PiecePicker, Priority } from '../lib/swarm/picker.ts'
import { Wire, type WireHandler } from '../lib/swarm/wire.ts'
import { bytesFor } from './helpers/fixtures.ts'
import { acceptedSockets, handshake, message, strangerId, u32 } from './helpers/peer-wire.ts'

const PIECE = 65_536

/**
 * A picker over real wires to peers played by hand, which hold pieces and never answer a request,
 * so what the picker asks of whom, and in which order, is the whole outcome; `clock` is stepped by
 * the test.
 */
async function handPlayed (t: Test, pieceCount: number) {
  const socket = await acceptedSockets(t)
  const data = bytesFor('picker', pieceCount * PIECE)
  const hashes = Buffer.concat(Array.from({ length: pieceCount }, (_, i) => createHash('sha1').update(data.subarray(i * PIECE, (i + 1) * PIECE)).digest()))
  const assembly = new Assembly({ pieceLength: PIECE, pieceCount, totalBytes: data.length, pieceHashes: hashes }, Buffer.alloc(data.length))
  const clock = { now: 0 }
  /** The picker's random numbers: Math.random's unless the test sets `random.next`. */
  const random = { next: Math.random }
  const picker = new PiecePicker(pieceCount, new Bitfield(pieceCount), assembly, () => clock.now, () => random.next())
  t.teardown(() => picker.close())
  const infoHash = randomBytes(20)
  const noop = () => {}
  const handler: WireHandler = {
    onPieces: (w, i) => picker.onPieces(w, i), onChoke: (w) => picker.onChoke(w),
    // As the node does: the blocks are free again, and the picker hears who turned them down.
    onReject: (w, r) => { assembly.release(r); picker.onReject(w, r) },
    onInterested: noop, onRequest: noop, onBlock: noop, onClose: noop
  }
  /** A connected peer with that id that holds `pieces` (all: have-all) and unchokes us. */
  const peer = async (peerId: Buffer, pieces?: number[]) => {
    const wire = new Wire(await socket(), { infoHash, peerId: randomBytes(20), pieceCount, outgoing: false, timeoutMs: 5000 })
    wire.receive(handshake(infoHash, { peerId }), false)
    await wire.ready
    picker.addWire(wire)
    wire.attach(handler)
    const bits = Buffer.alloc(Math.ceil(pieceCount / 8))
    for (const i of pieces ?? []) bits[i >> 3]! |= 0x80 >> (i & 7)
    wire.receive(Buffer.concat([pieces === undefined ? message(0x0e) : message(5, bits), message(1)]), false)
    return wire
  }
  const turn = () => new Promise((resolve) => setImmediate(resolve))
  /** Pieces with a request outstanding on `wire`, in the order first asked. */
  const asked = (wire: Wire) => [...new Set(wire.outstanding.map((r) => r.index))]
  /** Counts every look at the wire's pieces from now on (`looks.count`; the test may reset it). */
  const countLooks = (wire: Wire) => {
    const looks = { count: 0 }
    const get = wire.peerPieces.get.bind(wire.peerPieces)
    wire.peerPieces.get = (i: number) => { looks.count++; return get(i) }
    return looks
  }
  return { picker, clock, random, peer, turn, asked, countLooks }
}

/** 16 pieces, all wanted in the background, of one peer that holds all: what it was asked, and all else. */
async function backgroundUnderway (t: Test) {
  const played = await handPlayed(t, 16)
  const first = await played.peer(strangerId())
  played.picker.want(0, 15, Priority.Background)
  await played.turn()
  return { ...played, first, background: played.asked(first) }
}

/** Two peers that hold nothing yet, every piece wanted in the background. */
async function twoEmpty (t: Test, pieceCount: number) {
  const played = await handPlayed(t, pieceCount)
  const first = await played.peer(strangerId(), [])
  const second = await played.peer(strangerId(), [])
  played.picker.want(0, pieceCount - 1, Priority.Background)
  await played.turn()
  t.same([played.asked(first), played.asked(second)], [[], []], 'neither holds anything: nothing asked')
  return { ...played, first, second }
}

t.test('a read the program waits on is asked at once, beyond a pipeline full of the background fetch', async (t) => {
  const { picker, turn, asked, first: node, background } = await backgroundUnderway(t)
  t.ok(background.length > 0 && background.length < 16, `the background fills the pipeline, not more (${background.length} pieces asked)`)
  const read = [...Array(16).keys()].find((i) => !background.includes(i)) as number
  picker.want(read, read, Priority.Read)
  await turn()
  t.same(asked(node), [...background, read], 'the read is asked next, though no background piece has arrived')
})

t.test('an opened file is asked before any more of the background, of a peer with room', async (t) => {
  const { picker, peer, turn, asked, first, background } = await backgroundUnderway(t)
  // A file is a range of pieces: one the background has not asked for yet.
  const start = [...Array(13).keys()].find((s) => [0, 1, 2, 3].every((k) => !background.includes(s + k))) as number
  const file = [start, start + 1, start + 2, start + 3]
  picker.want(start, start + 3, Priority.File)
  await turn()
  t.same(asked(first), background, 'a full pipeline takes no more')
  const second = await peer(strangerId())
  await turn()
  const next = asked(second)
  t.ok(next.length > 0, 'the new peer is asked')
  t.ok(next.every((i) => file.includes(i)), `only the file's pieces (${next.join(', ')} of ${file.join(', ')}), none of the background's`)
})

t.test('endgame, with a stepped clock: a stalled read goes to another node before the head, and to the head when no other node has it', async (t) => {
  const { picker, clock, random, peer, turn } = await handPlayed(t, 4)
  const asked = (wire: Wire, piece: number) => wire.outstanding.filter((r) => r.index === piece).length
  random.next = () => 0.99 // peers looked at in the order they connected
  const head = await peer(Buffer.from(`-P2H020-${randomBytes(6).toString('hex')}`))
  const silent = await peer(strangerId())
  const other = await peer(Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`), [0])

  picker.want(0, 0, Priority.Read)
  await turn()
  t.ok(asked(silent, 0) > 0, 'the read goes to the first peer looked at that holds the piece (the head is asked only for pieces no peer holds)')
  t.same([asked(head, 0), asked(other, 0)], [0, 0])
  clock.now = 999
  picker.schedule()
  await turn()
  t.equal(asked(other, 0), 0, 'not yet stalled')
  clock.now = 1500
  picker.schedule()
  await turn()
  t.ok(asked(other, 0) > 0, 'stalled for 1.5 s: asked of the other node')
  t.equal(asked(head, 0), 0, 'not of the head: a node had it')

  // Piece 1: only the silent peer and the head hold it.
  picker.want(1, 1, Priority.Read)
  await turn()
  t.ok(asked(silent, 1) > 0 && asked(head, 1) === 0, 'the silent peer is asked first')
  clock.now = 3000
  picker.schedule()
  await turn()
  t.ok(asked(head, 1) > 0, 'stalled, and no other node has it: the head is asked')
})

t.test('a peer that turns a piece down is not asked for it again until its backoff ends; another holder is asked at once', async (t) => {
  const { picker, clock, peer, turn, asked } = await handPlayed(t, 4)
  /** The peer turns down (BEP 6 reject) every request it has for the piece. */
  const rejectAll = (wire: Wire, piece: number) => {
    for (const r of wire.outstanding.filter((o) => o.index === piece)) {
      wire.receive(message(0x10, Buffer.concat([u32(r.index), u32(r.begin), u32(r.length)])), false)
    }
  }
  const first = await peer(Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`), [0])
  picker.want(0, 0, Priority.Read)
  await turn()
  t.same(asked(first), [0], 'the one holder is asked')
  // It is sending the piece to enough others (a node's fan-out): it turns this one down.
  rejectAll(first, 0)
  await turn()
  t.same(asked(first), [], 'not asked again at once')
  const second = await peer(Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`), [0])
  await turn()
  t.same([asked(first), asked(second)], [[], [0]], 'a holder that did not turn it down is asked at once')
  rejectAll(second, 0)
  await turn()
  t.same([asked(first), asked(second)], [[], []], 'both backing off')
  clock.now = 249
  picker.schedule()
  await turn()
  t.same([asked(first), asked(second)], [[], []], 'still backing off')
  clock.now = 250
  picker.schedule()
  await turn()
  t.ok(asked(first).length + asked(second).length > 0, 'asked again once the backoff ended')
})

t.test('a have from one peer is looked at for that peer alone: the others, with nothing new, are not scanned again', async (t) => {
  const { picker, turn, asked, countLooks, first: idle, second: other } = await twoEmpty(t, 16)
  const looks = countLooks(idle)
  other.receive(message(4, u32(5)), false)
  await turn()
  t.same(asked(other), [5], 'the peer that announced piece 5 is asked for it')
  t.equal(looks.count, 0, 'the idle peer\'s pieces were not looked at again')
  // A change for every peer (new wants) looks at all of them again.
  picker.want(0, 0, Priority.Read)
  await turn()
  t.ok(looks.count > 0, `new wants: the idle peer was looked at (${looks.count} lookups)`)
})

t.test('a read goes to a holder taken at random, not to the first connected one', async (t) => {
  const { picker, random, peer, turn, asked } = await handPlayed(t, 4)
  const first = await peer(strangerId(), [2, 3])
  const second = await peer(strangerId(), [2, 3])
  // Fisher-Yates over the two wires: 0 swaps them, 0.99 keeps them as connected.
  random.next = () => 0
  picker.want(2, 2, Priority.Read)
  await turn()
  t.same([asked(first), asked(second)], [[], [2]], 'the order drawn put the second first: it is asked')
  random.next = () => 0.99
  picker.want(3, 3, Priority.Read)
  await turn()
  t.same([asked(first), asked(second)], [[3], [2]], 'the order drawn kept the first first: it is asked')
})

t.test('a peer with nothing more to give is asked about the pieces it announces, not scanned again; a change for all scans it again', async (t) => {
  const { turn, asked, countLooks, first: holder, second: other } = await twoEmpty(t, 64)
  const looks = countLooks(holder)
  holder.receive(message(4, u32(40)), false)
  looks.count = 0 // the wire's own look, on the have
  await turn()
  t.same(asked(holder), [40], 'the piece it announced is asked of it')
  t.equal(looks.count, 1, 'only the announced piece was looked at, not the 63 others still wanted')
  // Piece 40's blocks, turned down, are free again: a change for every peer; the other holder of
  // piece 40 is asked for it, though it never announced anything since.
  other.receive(message(4, u32(40)), false)
  await turn()
  for (const r of holder.outstanding) holder.receive(message(0x10, Buffer.concat([u32(r.index), u32(r.begin), u32(r.length)])), false)
  await turn()
  t.same(asked(other), [40], 'blocks freed by a reject: the other holder, with nothing new, is asked')
})

t.test('fan-out, with a stepped clock: a piece goes to at most so many peers within the window; the same peer again, a peer without BEP 6, or a closed peer\'s place are fine', async (t) => {
  const clock = { now: 0 }
  const fanOut = new FanOut(2, 500, 500, () => clock.now)
  const peer = (fast = true) => ({ fast, destroyed: false, peerPieces: new Bitfield(16) })
  const [a, b, c, old] = [peer(), peer(), peer(), peer(false)]
  t.same([fanOut.admits(a, 7), fanOut.admits(b, 7), fanOut.admits(c, 7)], [true, true, false], 'two peers, then no more')
  t.ok(fanOut.admits(a, 7) && fanOut.admits(c, 8), 'a peer already being sent the piece, and another piece, are fine')
  t.ok(fanOut.admits(old, 7), 'a peer that cannot be turned down is answered')
  ;(b as { destroyed: boolean }).destroyed = true
  t.ok(fanOut.admits(c, 7), 'a closed peer frees its place')
  clock.now = 499
  const d = peer()
  t.notOk(fanOut.admits(d, 7), 'still within the window')
  clock.now = 500
  t.ok(fanOut.admits(d, 7), 'the window has passed')
  const unlimited = new FanOut(1, 0, 0)
  t.ok(unlimited.admits(c, 7) && unlimited.admits(d, 7), 'a window of 0 is no limit')

  // The head's: one node at a time, for 2 s and then until that node says it has the piece (10 s at most).
  const head = new FanOut(1, 2000, 10_000, () => clock.now)
  clock.now = 0
  const [x, y, z] = [peer(), peer(), peer()]
  t.ok(head.admits(x, 3), 'the first asker gets it')
  x.peerPieces.set(3)
  clock.now = 1999
  t.notOk(head.admits(y, 3), 'not another within 2 s, even once the first has it')
  clock.now = 2000
  t.ok(head.admits(y, 3), 'after 2 s, the first having it, the next asker gets it')
  clock.now = 9999
  t.notOk(head.admits(z, 3), 'while that one has not said it has it, no other: it is slow, not gone')
  y.peerPieces.set(3)
  t.ok(head.admits(z, 3), 'once it has, the next')
  clock.now = 9999 + 9999
  t.notOk(head.admits(peer(), 3), 'that one has not said it has it either: still its place')
  clock.now = 9999 + 10_000
  t.ok(head.admits(peer(), 3), 'one that never says so frees its place after 10 s')
})
