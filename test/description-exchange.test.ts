// The description from peers instead of the head (issue: the head sent it to every node): the
// messages, a hostile peer's wrong description refused, the head's cap on copies, and a launch
// whose head sends fewer copies than there are nodes.
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { execFile } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { parseDescription, peerShareable } from '../lib/description.ts'
import { Announcer, peekPeers } from '../lib/swarm/announce.ts'
import { DescriptionServer, fetchDescriptionFromPeers, HEAD_DESC_PEERS } from '../lib/swarm/description-exchange.ts'
import { decodeDescMessage, DESC_ID, encodeDescMessage } from '../lib/swarm/extensions.ts'
import { parseJobSecret } from '../lib/swarm/job-auth.ts'
import { newPeerId } from '../lib/swarm/peer-id.ts'
import { Wire } from '../lib/swarm/wire.ts'
import { describedTree, ROOT, serve } from './helpers/cli.ts'
import { LIBRARY_TREE } from './helpers/fixtures.ts'
import { launch, launchDirs, nothingLeft } from './helpers/launch.ts'
import { scratch } from './helpers/scratch.ts'

const run = promisify(execFile)

t.test('p2prun_desc messages: what is encoded decodes; anything malformed decodes to nothing', async (t) => {
  const data = randomBytes(100)
  for (const msg of [{ type: 'request', piece: 3 }, { type: 'reject', piece: 0 }, { type: 'data', piece: 1, totalSize: 16484, data }] as const) {
    t.same(decodeDescMessage(encodeDescMessage(DESC_ID, msg)), msg, msg.type)
  }
  const bad = ['', 'd8:msg_typei0ee', 'd8:msg_typei7e5:piecei0ee', 'd8:msg_typei0e5:piecei-1ee', 'd8:msg_typei1e5:piecei0ee',
    'd8:msg_typei1e5:piecei0e10:total_sizei0ee', 'd8:msg_typei1e5:piecei0e10:total_sizei999999999999ee', 'le', 'i1e', 'd5:piece']
  for (const body of bad) t.equal(decodeDescMessage(Buffer.concat([Buffer.from([DESC_ID]), Buffer.from(body, 'latin1')])), undefined, JSON.stringify(body))
})

t.test('a node gets the description from a peer, refuses a wrong one, and the head hands out only its first copies', async (t) => {
  const { file, libs, torrent } = await describedTree(t, LIBRARY_TREE)
  const desc = parseDescription(torrent)
  const secretHex = randomBytes(32).toString('hex')
  const secret = parseJobSecret(secretHex, 'the test secret')
  const head = await serve(file, libs, [], secretHex)
  t.teardown(() => head.stop())
  const infoHash = Buffer.from(desc.infoHash, 'hex')

  // A peer of the job (it has the secret) that hands out a description of something else.
  const wrong = peerShareable(parseDescription((await describedTree(t, { files: { 'other.so': 5000 } }, 'other')).torrent))
  const liar = new DescriptionServer(wrong, 100)
  const liarId = newPeerId('node')
  const server = net.createServer((socket) => {
    socket.on('error', () => {})
    const wire = new Wire(socket, { infoHash, peerId: liarId, pieceCount: desc.pieceCount, outgoing: false, timeoutMs: 5000, secret, listenPort: 1, descSize: wrong.length })
    socket.on('data', (chunk: Buffer) => wire.receive(chunk, false))
    wire.attach({ onPieces () {}, onChoke () {}, onInterested () {}, onRequest () {}, onBlock () {}, onReject () {}, onClose () {}, onDesc: (w, m) => liar.onDesc(w, m) })
    wire.ready.catch(() => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const liarAddress = `127.0.0.1:${(server.address() as net.AddressInfo).port}`
  const announcer = new Announcer({
    trackers: [head.tracker], infoHash, peerId: liarId, port: Number(liarAddress.split(':')[1]), numwant: 1, secret,
    progress: () => ({ uploaded: 0, downloaded: 0, left: 0 }), onPeers: () => {}, onWarning: () => {}
  })
  announcer.start()
  t.teardown(async () => { await announcer.stop(); server.close() })
  const peek = () => peekPeers(head.tracker, { infoHash, peerId: newPeerId('node'), secret, numwant: 50, timeoutMs: 5000 })
  while (!(await peek()).includes(liarAddress)) await new Promise((resolve) => setImmediate(resolve))

  let offered = 0
  const fetchOnce = (deadlineMs: number) => fetchDescriptionFromPeers({
    infoHash, secret, trackers: [head.tracker], seeders: [head.seeder], deadlineMs,
    accept: (bytes) => {
      offered++
      try {
        return parseDescription(bytes, { expectInfoHash: desc.infoHash }).infoHash === desc.infoHash
      } catch {
        return false
      }
    }
  })
  for (let i = 0; i < HEAD_DESC_PEERS; i++) {
    const before = offered
    const bytes = await fetchOnce(10_000)
    t.ok(bytes && parseDescription(bytes).infoHash === desc.infoHash, `fetch ${i + 1}: the right description, from the head`)
    t.equal(offered - before, 2, `fetch ${i + 1}: the liar's description was offered first and refused`)
  }
  // The head has handed out its copies: the liar alone is left, and the fetch gives up at its deadline.
  t.equal(await fetchOnce(1500), undefined, `after ${HEAD_DESC_PEERS} copies the head refuses; a wrong description is never taken`)
})

t.test('a launch on 6 nodes: the head sends the description fewer times than there are nodes; native node agents fetch it, no Node process', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const dir = path.join(s.dir, 'hello')
  await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', dir])
  // Ranks wait for each other before the program, as MPI_Init does: a node's agent (a holder of the
  // description) stays while others still start. With a program that ends at once, early nodes
  // leave first and the head hands late ones more copies (bench/README).
  const started = path.join(s.dir, 'started')
  await mkdir(started)
  const barrier = `touch ${started}/$$; while [ "$(ls ${started} | wc -l)" -lt 6 ]; do sleep 0.05; done; exec ${path.join(dir, 'app')}`
  // By peers, not inside the job spec (the default when it fits: the test below).
  const r = await launch(s, dirs, ['-n', '6', '--launcher', 'local', '--stats', '--libs', path.join(dir, 'libs'), 'sh', '-c', barrier],
    { P2PRUN_NODE_PER_RANK: '1', P2PRUN_DESCRIPTION_ROUTE: 'peers', P2PRUN_DEBUG: '2' })
  t.equal(r.exitCode, 0, r.stderr)
  t.equal(r.stdout.match(/hello, world/g)?.length, 6, 'six ranks ran')
  const copies = Number(r.stderr.match(/of descriptions = ([\d.]+)x one/)?.[1])
  t.ok(copies >= 1 && copies <= HEAD_DESC_PEERS, `the head sent ${copies} copies of the description to 6 nodes: the others got it from peers`)
  // The agents' kept logs (P2PRUN_DEBUG): each a native node agent that fetched the description itself.
  const logs = await Promise.all((await readdir(path.join(dirs.run, 'logs'))).map((name) => readFile(path.join(dirs.run, 'logs', name), 'utf8')))
  t.equal(logs.length, 6, 'six node agents')
  t.ok(logs.every((log) => log.includes('agent: native, no Node process\n')), 'every one native, no Node process')
  const routes = logs.map((log) => log.match(/description: from (a peer|the head)\n/)?.[1])
  t.ok(routes.every((route) => route !== undefined), `each fetched it: ${routes.join(', ')}`)
  t.ok(routes.includes('a peer'), 'some from a peer')
  await rm(path.join(dirs.run, 'logs'), { recursive: true })
  await nothingLeft(t, s, dirs)
})

t.test('a launch on 6 nodes whose description fits in the job spec: the launcher carries it, the head sends none', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const dir = path.join(s.dir, 'hello')
  await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', dir])
  // Each rank reads its node's whole set (the mount is first on LD_LIBRARY_PATH) before the program:
  // with a program that ends at once, a node's agent could be stopped before the set's last piece
  // (the plugin, which the program does not load) was in, and the count below would be a race.
  const program = `cat "\${LD_LIBRARY_PATH%%:*}"/* > /dev/null && exec ${path.join(dir, 'app')}`
  const r = await launch(s, dirs, ['-n', '6', '--launcher', 'local', '--stats', '--libs', path.join(dir, 'libs'), 'sh', '-c', program], { P2PRUN_NODE_PER_RANK: '1' })
  t.equal(r.exitCode, 0, r.stderr)
  t.equal(r.stdout.match(/hello, world/g)?.length, 6, 'six ranks ran, each on its own node')
  t.match(r.stderr, /and 0 B of descriptions = 0\.00x one/, 'no description from the head, to any node')
  t.match(r.stderr, /6 nodes had the whole set/)
  await nothingLeft(t, s, dirs)
})
