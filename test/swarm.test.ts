// The head's seeder (a `p2prun serve` process) and several nodes — `p2prun fetch` processes, or
// swarm nodes in this process where the test holds them in the swarm together — over real TCP on loopback.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { statfsSync } from 'node:fs'
import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { parseDescription } from '../lib/description.ts'
import { isAlive } from '../lib/session/process.ts'
import { extractTree } from '../lib/extract.ts'
import { Connections } from '../lib/swarm/connections.ts'
import { decodePex, encodePex, type Pex } from '../lib/swarm/extensions.ts'
import { SwarmNode } from '../lib/swarm/node.ts'
import { parseJobSecret } from '../lib/swarm/job-auth.ts'
import { newPeerId } from '../lib/swarm/peer-id.ts'
import { bytesFor, snapshotTree } from './helpers/fixtures.ts'
import { describedTree, p2prun, SEEDERS, serve } from './helpers/cli.ts'
import { handshake, message, peerProof, readPeer, u32 } from './helpers/peer-wire.ts'
import { freePorts } from './helpers/ports.ts'

const SET_FILES = { 'libone.so.1': 3_000_000, 'libtwo.so.1': 2_500_000, 'sub/libthree.so': 1_700_000, 'tiny.so': 10 }

async function describedSet (t: Test) {
  const described = await describedTree(t, { files: SET_FILES, symlinks: { 'libone.so': 'libone.so.1' }, dirs: ['empty'] })
  return { ...described, bytes: Object.values(SET_FILES).reduce((a, b) => a + b, 0) }
}

for (const { seeder, args } of SEEDERS) {
  t.test(`a seeder and three nodes that stay until all have the set: each piece leaves the head once, the rest goes node to node (${seeder} seeder)`, async (t) => {
    const { dir, libs, file, bytes } = await describedSet(t)
    // The head sends a piece to one node at a time and defers everyone else to that node for ten
    // minutes: the nodes must trade pieces, and no speed of theirs can make the head send one twice.
    // (The default window is 2 s; an outcome that depended on it would depend on this machine's load.)
    const head = await serve(file, libs, [...args, '--defer-to-peers', '600'])
    t.teardown(head.stop)
    const desc = parseDescription(await readFile(file))
    const nodes = await Promise.all([1, 2, 3].map(() => SwarmNode.join(desc, {
      storeDir: dir, port: 0, maxConns: 10, numwant: 10, stallTimeoutMs: 60_000, trackers: [head.tracker], seeders: [head.seeder]
    })))
    t.teardown(() => Promise.all(nodes.map((n) => n.close())))
    await Promise.all(nodes.map((n) => n.fetchAll()))
    // Room for each piece is taken before a byte of it is written through the store's mapping, where
    // running out of room would be a SIGBUS, not an error.
    const store = await stat(path.join(nodes[0]!.storePath, 'data'))
    t.ok(store.size === desc.totalBytes && store.blocks * 512 >= desc.totalBytes, `the store holds the set (${store.blocks * 512} bytes allocated for ${desc.totalBytes})`)
    const expected = await snapshotTree(libs)
    let fromPeers = 0
    for (const [i, node] of nodes.entries()) {
      const out = path.join(dir, `node${i + 1}`)
      await extractTree(desc, node, out)
      t.same(await snapshotTree(out), expected, `node ${i + 1} has every file byte for byte`)
      const { fromHead, fromPeers: mine } = node.stats()
      t.ok(fromHead + mine >= bytes, `node ${i + 1} received at least the set`)
      fromPeers += mine
    }
    await Promise.all(nodes.map((n) => n.close()))
    const uploaded = await head.stop()
    t.equal(uploaded, bytes, `the head sent the set once (${(uploaded / bytes).toFixed(3)}x), not a piece twice`)
    t.ok(fromPeers >= 1.75 * bytes, `the nodes got ${(fromPeers / bytes).toFixed(2)}x the set from each other (the other two copies)`)
    t.same((await readdir(dir)).filter((n) => n.startsWith('p2prun-')), [], 'no store left behind')
  })
}

t.test('a store that fills up after the node joined: what waits fails with one error, and the agent lives on', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const head = await serve(file, libs, [])
  t.teardown(head.stop)
  const desc = parseDescription(await readFile(file))
  // Room for the set when the node joins (its check passes), none once it fetches: the set's bytes
  // are written through a mapping of the store, where a full file system would be a SIGBUS that
  // kills the process, unless each piece's room is taken first.
  const small = path.join(dir, 'small-store')
  await mkdir(small)
  await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', `size=${desc.totalBytes + (1 << 20)}`, 'tmpfs', small])
  // Lazily: the node's mapping of its store (removed on close) lasts until this process collects it.
  t.teardown(() => promisify(execFile)('umount', ['--lazy', small]).catch(() => {}))
  const node = await SwarmNode.join(desc, {
    storeDir: small, port: 0, maxConns: 10, numwant: 10, stallTimeoutMs: 60_000, trackers: [head.tracker], seeders: [head.seeder]
  })
  t.teardown(() => node.close())
  const { bavail, bsize } = statfsSync(small)
  await writeFile(path.join(small, 'filler'), Buffer.alloc(bavail * bsize - (1 << 20)))
  await t.rejects(node.fetchAll(), /^cannot write to the store \S+: cannot allocate room in the store: No space left on device$/)
  t.ok(node.stats().piecesHave < desc.pieceCount, `some pieces fit (${node.stats().piecesHave} of ${desc.pieceCount}), not all`)
  await node.close()
  t.same((await readdir(small)).sort(), ['filler'], 'its store is removed')
  await promisify(execFile)('umount', ['--lazy', small]) // before the test's directory is removed
})

t.test('block mode\'s open: a file\'s first and last pieces are fetched without a read, and nothing between', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const head = await serve(file, libs, [])
  t.teardown(head.stop)
  const desc = parseDescription(await readFile(file))
  const node = await SwarmNode.join(desc, { storeDir: dir, port: 0, maxConns: 10, numwant: 10, stallTimeoutMs: 60_000, trackers: [head.tracker], seeders: [head.seeder] })
  t.teardown(() => node.close())
  const entry = desc.entries.find((e) => e.path === 'libone.so.1')!
  const last = entry.size - 1
  t.ok(desc.pieceLength * 3 < entry.size, 'the file spans more than three pieces')
  node.fetchEnds(entry)
  // Synchronization, not a measure: the two pieces arrive when they do.
  for (let waited = 0; node.stats().piecesHave < 2 && waited < 30_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok(node.has(entry, 0, 1) && node.has(entry, last, 1), 'the first and the last piece are local')
  t.notOk(node.has(entry, desc.pieceLength * 2, 1), 'a piece between them was not asked for')
  t.equal(node.stats().piecesHave, 2, 'two pieces in all')
})

t.test('a node sends a piece to one peer at a time while the job\'s nodes read, to three once it fetches everything', async (t) => {
  const { dir, libs, file } = await describedSet(t)
  const head = await serve(file, libs, [])
  t.teardown(head.stop)
  const desc = parseDescription(await readFile(file))
  const [port] = await freePorts(1)
  const node = await SwarmNode.join(desc, { storeDir: dir, port, maxConns: 10, numwant: 10, stallTimeoutMs: 60_000, trackers: [head.tracker], seeders: [head.seeder] })
  t.teardown(() => node.close())
  const entry = desc.entries.find((e) => e.path === 'libone.so.1')!
  await node.read(entry, 0, Buffer.alloc(2 * desc.pieceLength))
  const first = Math.floor((entry.torrentOffset ?? 0) / desc.pieceLength)
  // Four peers by hand, unchoked, then each asking for the same block at once.
  const peers = await Promise.all([1, 2, 3, 4].map(() => handPeer(t, port, Buffer.from(desc.infoHash, 'hex'))))
  const answers = async (index: number) => (await Promise.all(peers.map((p) => p.ask(index)))).sort()
  t.same(await answers(first), ['piece', 'reject', 'reject', 'reject'], 'reading: one peer gets the piece, the others are turned down')
  const fetching = node.fetchAll()
  t.same(await answers(first + 1), ['piece', 'piece', 'piece', 'reject'], 'fetching everything: three peers get it')
  await fetching
})

t.test('with --defer-to-peers 0 the head serves every request, and every node completes', async (t) => {
  const { dir, libs, file, bytes } = await describedSet(t)
  const head = await serve(file, libs, ['--defer-to-peers', '0', '--upload-limit', String(2 * 1024 * 1024)])
  t.teardown(head.stop)
  const results = await Promise.all([1, 2, 3].map((i) => p2prun(['fetch', file, '--out', path.join(dir, `node${i}`),
    '--tracker', head.tracker, '--seeder', head.seeder, '--store-dir', dir, '--json'])))
  const expected = await snapshotTree(libs)
  for (const [i, r] of results.entries()) {
    t.equal(r.exitCode, 0, `node ${i + 1}: ${r.stderr}`)
    t.same(await snapshotTree(path.join(dir, `node${i + 1}`)), expected, `node ${i + 1} has every file byte for byte`)
  }
  const uploaded = await head.stop()
  t.ok(uploaded >= bytes && uploaded < 3 * bytes, `the head sent ${(uploaded / bytes).toFixed(2)}x the set`)
})

t.test('a node that cannot reach any seeder fails after the stall timeout and leaves nothing', async (t) => {
  const { dir, file } = await describedSet(t)
  const r = await p2prun(['fetch', file, '--out', path.join(dir, 'out'), '--seeder', '127.0.0.1:9', '--store-dir', dir,
    '--stall-timeout', '2'])
  t.equal(r.exitCode, 1)
  t.match(r.stderr, /^p2prun fetch: error: no data arrived for 2 s \(0 peers connected\).*\(hint: check that `p2prun serve`/)
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  const left = await readdir(dir)
  t.notOk(left.includes('out'), 'the output directory it created is removed')
  t.same(left.filter((n) => n.startsWith('p2prun-')), [], 'no store left behind')
})

t.test('fetch without any tracker or seeder is refused up front', async (t) => {
  const { dir, file } = await describedSet(t)
  const r = await p2prun(['fetch', file, '--out', path.join(dir, 'out'), '--store-dir', dir])
  t.equal(r.exitCode, 1)
  t.match(r.stderr, /names no tracker or seeder.*hint: pass --tracker URL or --seeder HOST:PORT/)
})

for (const { seeder, args } of SEEDERS) {
  t.test(`the seeder checks its source against the description (${seeder} seeder)`, async (t) => {
    const { libs, file } = await describedSet(t)
    // Same size, same mtime, other bytes: only hashing can tell.
    const target = path.join(libs, 'libtwo.so.1')
    const { mtime } = await stat(target)
    await writeFile(target, bytesFor('something else', 2_500_000))
    await utimes(target, mtime, mtime)
    const verified = await p2prun(['serve', file, '--source', libs, '--host', '127.0.0.1', '--open', '--verify-source', ...args])
    t.equal(verified.exitCode, 1)
    t.match(verified.stderr, new RegExp(`^p2prun serve: error: ${libs} does not match the description: \\d+ of \\d+ pieces differ \\(hint: describe the directory again`, 'm'))
    t.equal(verified.stderr.trim().split('\n').length, 1, 'one line')
  })
}

/** `pid`'s descendants and their command lines. */
async function descendants (pid: number): Promise<Array<{ pid: number, command: string }>> {
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).split(' ').filter(Boolean).map(Number)
  const found = await Promise.all(children.map(async (c) => [
    { pid: c, command: (await readFile(`/proc/${c}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ') }, ...await descendants(c)]))
  return found.flat()
}

t.test('p2prun serve runs the native seeder, but with --agent node or an upload limit (which it does not do)', async (t) => {
  const { libs, file } = await describedSet(t)
  for (const [extra, native] of [[[], true], [['--agent', 'node'], false], [['--upload-limit', '1000000'], false]] as const) {
    const head = await serve(file, libs, extra)
    const seeds = (await descendants(head.child.pid as number)).filter((c) => / seed - /.test(c.command))
    t.equal(seeds.length, native ? 1 : 0, `${extra.join(' ') || 'by default'}: ${native ? 'p2prun-agent seed' : 'no native seeder'}`)
    await head.stop()
    for (const s of seeds) t.notOk(await isAlive(s.pid), 'the native seeder ends with the head')
  }
})

t.test('a size change is caught without hashing', async (t) => {
  const { libs, file } = await describedSet(t)
  await writeFile(path.join(libs, 'libtwo.so.1'), 'short')
  const sized = await p2prun(['serve', file, '--source', libs, '--host', '127.0.0.1', '--open'])
  t.equal(sized.exitCode, 1)
  t.match(sized.stderr, /libtwo\.so\.1 has 5 bytes, the description says 2500000/)
})

/** A peer played by hand (BEP 3 with the Fast Extension): connected, interested and unchoked; `ask` requests a block and says how it was answered. */
async function handPeer (t: Test, port: number, infoHash: Buffer) {
  const socket = net.connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const waiting: Array<{ id: number, resolve: (id: number) => void }> = []
  const seen: number[] = []
  readPeer(socket, (msg) => {
    const id = msg[0]!
    seen.push(id)
    for (const w of waiting.splice(0)) {
      if (ids(w.id).includes(id)) w.resolve(id)
      else waiting.push(w)
    }
  })
  // 1: unchoke; for a request, 7 (piece) or 16 (reject).
  const ids = (id: number) => id === 7 ? [7, 16] : [id]
  const next = (id: number) => {
    const got = seen.find((s) => ids(id).includes(s))
    return got !== undefined ? Promise.resolve(got) : new Promise<number>((resolve) => waiting.push({ id, resolve }))
  }
  socket.write(handshake(infoHash, { fast: true }))
  socket.write(message(2))
  await next(1)
  return {
    ask: async (index: number) => {
      seen.length = 0
      socket.write(message(6, Buffer.concat([u32(index), u32(0), u32(16384)])))
      return (await next(7)) === 7 ? 'piece' : 'reject'
    }
  }
}

t.test('peers told of (a tracker, the DHT, peer exchange) are dialed only while there are fewer connections than dialTarget', async (t) => {
  const noop = () => {}
  const connections = await Connections.listen({
    infoHash: randomBytes(20), peerId: newPeerId('node'), pieceCount: 1, host: '127.0.0.1', port: 0, maxConns: 100, dialTarget: 3, learnPeers: true,
    handler: { onPieces: noop, onChoke: noop, onInterested: noop, onRequest: noop, onBlock: noop, onReject: noop, onClose: noop }, onWire: noop
  })
  t.teardown(() => connections.close())
  // Each dial is a net.connect, seen as it is made: nothing listens at these ports, and none of them is refused before the checks below.
  const dials: string[] = []
  const seen = (m: unknown) => { dials.push(String((m as { socket: net.Socket }).socket.remotePort ?? 'dial')) }
  diagnostics.subscribe('net.client.socket', seen)
  t.teardown(() => diagnostics.unsubscribe('net.client.socket', seen))
  const ports = await freePorts(12)
  connections.dialSome(ports.slice(0, 10).map((p) => `127.0.0.1:${p}`))
  t.equal(dials.length, 3, 'three of the ten, the target')
  connections.dialSome(ports.slice(10).map((p) => `127.0.0.1:${p}`))
  t.equal(dials.length, 3, 'none more while those three are under way')
})

t.test('the head\'s referral (ut_pex marked p2prun_referral) is dialed whole, but while the node fetches everything (eager mode); a node\'s is peer exchange, up to numwant', async (t) => {
  const { dir, file } = await describedSet(t)
  const desc = parseDescription(await readFile(file))
  const secret = randomBytes(32).toString('hex') // extension messages count from peers that proved it only
  const [port, deadSeeder] = await freePorts(2) as [number, number]
  // No seeder answers: fetchAll waits until the node is closed.
  const node = await SwarmNode.join(desc, {
    storeDir: dir, port, maxConns: 100, numwant: 3, stallTimeoutMs: 600_000, trackers: [], seeders: [`127.0.0.1:${deadSeeder}`],
    secret: parseJobSecret(secret, 'the test')
  })
  t.teardown(() => node.close())
  // The ports the node dials: nobody listens at those the test names, each attempt counts all the
  // same (and a failed one is tried again later: counted once).
  const attempts = new Set<number>()
  let attempted = () => {}
  const seen = (msg: unknown) => (msg as { socket: net.Socket }).socket.once('connectionAttempt', (_ip: string, p: number) => { attempts.add(p); attempted() })
  diagnostics.subscribe('net.client.socket', seen)
  t.teardown(() => diagnostics.unsubscribe('net.client.socket', seen))
  const dialsOf = (ports: number[]) => ports.filter((p) => attempts.has(p))
  const allDialed = (ports: number[]) => new Promise<void>((resolve) => { attempted = () => { if (dialsOf(ports).length === ports.length) resolve() }; attempted() })
  const infoHash = Buffer.from(desc.infoHash, 'hex')
  // A peer (the head or a node) refers the node to five addresses and leaves; the node has taken the
  // referral (and dialed: each attempt a tick later) before it closes its end.
  const refer = async (role: 'head' | 'node', ports: number[]) => {
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    t.teardown(() => socket.destroy())
    const gone = new Promise((resolve) => socket.once('close', resolve))
    const peerId = newPeerId(role)
    socket.write(handshake(infoHash, { extensions: true, peerId }))
    socket.once('data', (chunk: Buffer) => socket.end(Buffer.concat([
      message(20, Buffer.concat([Buffer.from('\0d1:md6:ut_pexi1ee11:p2prun_auth32:', 'latin1'), peerProof(secret, infoHash, peerId, chunk.subarray(48, 68)), Buffer.from('e')])),
      message(20, encodePex(1, ports.map((p) => `127.0.0.1:${p}`), true))
    ])))
    await gone
  }
  const [fromNode, fromHead, whileEager] = [await freePorts(5), await freePorts(5), await freePorts(5)]
  // Up to numwant (3) with the referring peer's own connection: at most two dials.
  await refer('node', fromNode)
  t.ok(dialsOf(fromNode).length <= 2, `a node's: as told peers are, up to numwant: ${dialsOf(fromNode).length}`)
  await refer('head', fromHead)
  await allDialed(fromHead)
  t.equal(dialsOf(fromHead).length, 5, 'the head\'s: each of the five')
  node.fetchAll().catch(() => {}) // it fails when the node closes
  await refer('head', whileEager)
  t.ok(dialsOf(whileEager).length <= 2, `the head's while the node fetches everything: as told peers are: ${dialsOf(whileEager).length}`)
})

for (const { seeder, args } of SEEDERS) {
  t.test(`the head turns a piece down to a second node and tells it where the piece went (a ut_pex referral): that node may not be connected to the first (${seeder} seeder)`, async (t) => {
    const { libs, file } = await describedSet(t)
    const secret = randomBytes(32).toString('hex')
    const head = await serve(file, libs, args, secret)
    t.teardown(head.stop)
    const infoHash = Buffer.from(parseDescription(await readFile(file)).infoHash, 'hex')
    const port = Number(head.seeder.split(':')[1])
    const [a, b] = await Promise.all([provenPeer(t, port, secret, infoHash, 40011), provenPeer(t, port, secret, infoHash, 40012)])
    t.equal(await a.ask(3), 'piece', 'the first asker gets it')
    t.equal(await b.ask(3), 'reject', 'the second is turned down')
    t.same((await b.referral).added, ['127.0.0.1:40011'], 'and told where the first listens')
    t.notOk(a.pexes.some((p) => p.referral), 'the first was referred nowhere')
  })
}

/** A node of a job with a secret, played by hand: handshake, proof, ut_pex (id 1) and a listen port; interested and unchoked. */
async function provenPeer (t: Test, port: number, secret: string, infoHash: Buffer, listenPort: number) {
  const peerId = Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`)
  const socket = net.connect(port, '127.0.0.1')
  t.teardown(() => socket.destroy())
  const answers: Array<(id: number) => void> = []
  const pexes: Pex[] = []
  let referred: (pex: Pex) => void = () => {}
  const referral = new Promise<Pex>((resolve) => { referred = resolve })
  const unchoked = new Promise<void>((resolve) => {
    readPeer(socket, (msg) => {
      if (msg[0] === 1) resolve()
      if (msg[0] === 7 || msg[0] === 16) answers.shift()?.(msg[0])
      if (msg[0] !== 20 || msg[1] !== 1) return
      const pex = decodePex(msg.subarray(1))
      pexes.push(pex)
      if (pex.referral) referred(pex)
    })
  })
  socket.once('data', (chunk: Buffer) => {
    const auth = peerProof(secret, infoHash, peerId, chunk.subarray(48, 68))
    socket.write(Buffer.concat([message(20, Buffer.concat([Buffer.from(`\0d1:md6:ut_pexi1ee1:pi${listenPort}e11:p2prun_auth32:`, 'latin1'), auth, Buffer.from('e')])), message(2)]))
  })
  socket.write(handshake(infoHash, { extensions: true, peerId }))
  await unchoked
  return {
    pexes,
    referral,
    ask: (index: number) => new Promise<string>((resolve) => {
      answers.push((id) => resolve(id === 7 ? 'piece' : 'reject'))
      socket.write(message(6, Buffer.concat([u32(index), u32(0), u32(16384)])))
    })
  }
}
