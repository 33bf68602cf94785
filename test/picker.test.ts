// The piece picker inside one swarm node (in process), against a real seeder over loopback whose
// upload is capped, so the order in which pieces arrive is the picker's, not the network's; and on
// its own, over real wires, with a clock the test steps (the endgame).
import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import t, { type Test } from 'tap'
import { parseDescription } from '../lib/description.ts'
import { Assembly } from '../lib/swarm/assembly.ts'
import { Bitfield } from '../lib/swarm/bitfield.ts'
import { SwarmNode } from '../lib/swarm/node.ts'
import { PiecePicker, Priority } from '../lib/swarm/picker.ts'
import { Wire, type WireHandler } from '../lib/swarm/wire.ts'
import { bytesFor, makeTree } from './helpers/fixtures.ts'
import { p2prun, serve } from './helpers/cli.ts'
import { acceptedSockets, handshake, message, strangerId } from './helpers/peer-wire.ts'

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

t.test('endgame, with a stepped clock: a stalled read goes to another node before the head, and to the head when no other node has it', async (t) => {
  const socket = await acceptedSockets(t)
  const PIECES = 4
  const data = bytesFor('endgame', PIECES * 65_536)
  const hashes = Buffer.concat(Array.from({ length: PIECES }, (_, i) => createHash('sha1').update(data.subarray(i * 65_536, (i + 1) * 65_536)).digest()))
  const assembly = new Assembly({ pieceLength: 65_536, pieceCount: PIECES, totalBytes: data.length, pieceHashes: hashes })
  const clock = { now: 0 }
  const picker = new PiecePicker(PIECES, new Bitfield(PIECES), assembly, () => clock.now)
  const infoHash = randomBytes(20)
  const noop = () => {}
  const handler: WireHandler = {
    onPieces: (w, i) => picker.onPieces(w, i), onChoke: (w) => picker.onChoke(w),
    onInterested: noop, onRequest: noop, onBlock: noop, onReject: noop, onClose: noop
  }
  /** A connected peer of `role` that holds `pieces` (all: have-all) and unchokes us. */
  const peer = async (peerId: Buffer, pieces?: number[]) => {
    const wire = new Wire(await socket(), { infoHash, peerId: randomBytes(20), pieceCount: PIECES, outgoing: false, timeoutMs: 5000 })
    wire.receive(handshake(infoHash, { peerId }), false)
    await wire.ready
    picker.addWire(wire)
    wire.attach(handler)
    const have = pieces === undefined ? message(0x0e) : message(5, Buffer.from([pieces.reduce((bits, i) => bits | (0x80 >> i), 0)]))
    wire.receive(Buffer.concat([have, message(1)]), false)
    return wire
  }
  const turn = () => new Promise((resolve) => setImmediate(resolve))
  const asked = (wire: Wire, piece: number) => wire.outstanding.filter((r) => r.index === piece).length
  const head = await peer(Buffer.from(`-P2H020-${randomBytes(6).toString('hex')}`))
  const silent = await peer(strangerId())
  const other = await peer(Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`), [0])

  picker.want(0, 0, Priority.Read)
  await turn()
  t.ok(asked(silent, 0) > 0, 'the read goes to the first peer holding the piece (the head is asked only for pieces no peer holds)')
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
  picker.close()
})
