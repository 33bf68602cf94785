// Trackerless discovery (lib/swarm/dht.ts): real DHT nodes over UDP on loopback, the head's as the
// only bootstrap; hostile datagrams at the head's DHT port.
import dgram from 'node:dgram'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import bencode from 'bencode'
import t, { type Test } from 'tap'
import { DhtDiscovery, DhtLookup, startDhtBootstrap } from '../lib/swarm/dht.ts'
import { execa } from 'execa'
import { parseDescription } from '../lib/description.ts'
import { fetchDescriptionFromPeers, HEAD_DESC_PEERS } from '../lib/swarm/description-exchange.ts'
import { parseJobSecret } from '../lib/swarm/job-auth.ts'
import { SwarmNode } from '../lib/swarm/node.ts'
import { cleanEnv, CLI, describedTree, p2prun, ROOT, waitForLine } from './helpers/cli.ts'
import { snapshotTree } from './helpers/fixtures.ts'
import { krpcClient } from './helpers/krpc.ts'
import { launch, launchDirs, nothingLeft } from './helpers/launch.ts'
import { scratch } from './helpers/scratch.ts'

const INFO_HASH = randomBytes(20)

/** Resolves once `check` holds, re-checked on every call of the returned `poke`. */
function eventually (check: () => boolean): { done: Promise<void>, poke: () => void } {
  let resolve = () => {}
  const done = new Promise<void>((r) => { resolve = r })
  return { done, poke: () => { if (check()) resolve() } }
}

t.test('nodes bootstrapped from the head alone find each other under the infohash', async (t) => {
  const head = await startDhtBootstrap('127.0.0.1', 0, '127.0.0.1')
  t.teardown(head.close)
  const found = new Map<number, Set<string>>()
  const ports = [41001, 41002, 41003]
  // A node without the description looks for holders round after round, with one DHT node.
  const lookup = await DhtLookup.open([head.address], '127.0.0.1')
  t.teardown(() => lookup.close())
  t.same(await lookup.peers(INFO_HASH, 5000), [], 'no holder before any node joined')
  const all = eventually(() => ports.every((p) => ports.filter((q) => q !== p).every((q) => found.get(p)?.has(`127.0.0.1:${q}`))))
  const nodes = ports.map((port) => {
    found.set(port, new Set())
    const node = new DhtDiscovery({
      bootstrap: [head.address], infoHash: INFO_HASH, host: '127.0.0.1', port,
      onPeers: (addresses) => { for (const a of addresses) found.get(port)?.add(a); all.poke() },
      onWarning: (line) => t.fail(`no warning expected: ${line}`)
    })
    t.teardown(() => node.stop())
    return node
  })
  // One after the other, each once the ones before announced: a later lookup finds the earlier
  // nodes; the earlier ones find the later at their next lookup or, in a swarm, by peer exchange.
  for (const [i, node] of nodes.entries()) {
    node.start()
    await waitUntil(() => head.announced(INFO_HASH.toString('hex')) > i)
  }
  t.equal(head.announced(INFO_HASH.toString('hex')), 3, 'each node announced itself to the head\'s DHT node')
  const last = found.get(41003) as Set<string>
  t.ok(last.has('127.0.0.1:41001') && last.has('127.0.0.1:41002'), `the last node found the two before it: ${[...last].join(' ')}`)
  t.notOk(ports.some((p) => found.get(p)?.has(`127.0.0.1:${p}`)), 'no node is told of itself')
  t.same((await lookup.peers(INFO_HASH, 5000)).sort(), ports.map((p) => `127.0.0.1:${p}`),
    'the same lookup node finds every holder once they joined')
})

t.test('nodes that all look before any of them announced still find each other in that round', async (t) => {
  const head = await startDhtBootstrap('127.0.0.1', 0, '127.0.0.1')
  t.teardown(head.close)
  const relay = await lookFirstRelay(t, head.address, 2)
  const ports = [41041, 41042]
  const found = new Map(ports.map((port) => [port, new Set<string>()]))
  let rounds = 0
  const roundsDone = eventually(() => rounds === ports.length)
  for (const port of ports) {
    const node = new DhtDiscovery({
      bootstrap: [relay.address], infoHash: INFO_HASH, host: '127.0.0.1', port,
      onPeers: (addresses) => { for (const a of addresses) found.get(port)?.add(a) },
      onWarning: (line) => t.fail(`no warning expected: ${line}`),
      // The next round is dropped: what the first one found is what is checked.
      later: () => { rounds++; roundsDone.poke(); return setTimeout(() => {}).unref() }
    })
    t.teardown(() => node.stop())
    node.start()
  }
  await roundsDone.done
  t.equal(relay.emptyFirstAnswers(), 2, 'each node\'s first lookup found no one: no announce reached the head before both were answered')
  t.equal(head.announced(INFO_HASH.toString('hex')), 2, 'both nodes announced')
  const [a, b] = ports
  t.ok(found.get(a as number)?.has(`127.0.0.1:${b}`) || found.get(b as number)?.has(`127.0.0.1:${a}`),
    `one of the two found the other: ${JSON.stringify(ports.map((p) => [p, [...found.get(p) ?? []]]))}`)
})

/**
 * A UDP relay in front of the head's DHT node that holds every announce_peer back until `nodes`
 * nodes each had a get_peers answered: the nodes all look before any of them announced, as nodes
 * started together may. Each node gets a socket of its own toward the head (the head tells nodes
 * apart by address); what reaches that socket from anyone but the head is dropped.
 */
async function lookFirstRelay (t: Test, headAddress: string, nodes: number) {
  const headPort = Number(headAddress.split(':')[1])
  const front = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => front.bind(0, '127.0.0.1', resolve))
  const backs = new Map<string, dgram.Socket>()
  t.teardown(() => { front.close(); for (const back of backs.values()) back.close() })
  const asked = new Set<string>() // node and transaction id of each get_peers relayed
  const answered = new Set<string>() // nodes whose get_peers the head answered
  const held: Array<() => void> = []
  let emptyFirstAnswers = 0
  const decoded = (msg: Buffer) => bencode.decode(msg) as { t?: Uint8Array, q?: Uint8Array, r?: { values?: unknown } }
  const text = (value: Uint8Array | undefined) => value ? Buffer.from(value).toString('latin1') : ''
  front.on('message', (msg, from) => {
    const node = `${from.address}:${from.port}`
    let back = backs.get(node)
    if (!back) {
      const socket = dgram.createSocket('udp4')
      socket.on('message', (reply, sender) => {
        if (sender.port !== headPort) return
        front.send(reply, from.port, from.address)
        const answer = decoded(reply)
        if (!asked.has(`${node} ${text(answer.t)}`) || answered.has(node)) return
        answered.add(node)
        if (!answer.r?.values) emptyFirstAnswers++
        if (answered.size >= nodes) for (const release of held.splice(0)) release()
      })
      backs.set(node, back = socket)
    }
    const toHead = back
    const send = () => toHead.send(msg, headPort, '127.0.0.1')
    const query = decoded(msg)
    const q = text(query.q)
    if (q === 'get_peers') asked.add(`${node} ${text(query.t)}`)
    if (q === 'announce_peer' && answered.size < nodes) held.push(send)
    else send()
  })
  return { address: `127.0.0.1:${front.address().port}`, emptyFirstAnswers: () => emptyFirstAnswers }
}

t.test('an unreachable bootstrap: said once, a lookup fails with the address', async (t) => {
  // A UDP port with nothing on it: bound, then closed.
  const gone = dgram.createSocket('udp4')
  await new Promise<void>((resolve) => gone.bind(0, '127.0.0.1', resolve))
  const address = `127.0.0.1:${gone.address().port}`
  gone.close()
  const lookup = await DhtLookup.open([address], '127.0.0.1')
  t.teardown(() => lookup.close())
  await t.rejects(lookup.peers(INFO_HASH, 20_000), new RegExp(`the DHT bootstrap ${address} does not answer`))
  await t.rejects(lookup.peers(INFO_HASH, 20_000), new RegExp(`the DHT bootstrap ${address} does not answer`), 'and again in the next round')
  const warnings: string[] = []
  const saidOnce = eventually(() => warnings.length >= 1)
  const node = new DhtDiscovery({
    bootstrap: [address], infoHash: INFO_HASH, host: '127.0.0.1', port: 41010,
    onPeers: () => t.fail('no peers from nowhere'), onWarning: (line) => { warnings.push(line); saidOnce.poke() }
  })
  t.teardown(() => node.stop())
  node.start()
  await saidOnce.done
  t.same(warnings, [`the DHT bootstrap ${address} does not answer; retrying`])
})

t.test('the DHT node a node looked for the description with becomes its own: one DHT node, alive after the lookup is closed', async (t) => {
  const head = await startDhtBootstrap('127.0.0.1', 0, '127.0.0.1')
  t.teardown(head.close)
  const lookup = await DhtLookup.open([head.address], '127.0.0.1')
  t.teardown(() => lookup.close())
  t.same(await lookup.peers(INFO_HASH, 5000), [], 'the lookup asks the DHT')
  const port = lookup.port
  const node = new DhtDiscovery({
    bootstrap: [head.address], infoHash: INFO_HASH, host: '127.0.0.1', port: 41030, from: lookup,
    onPeers: () => {}, onWarning: (line) => t.fail(line)
  })
  t.teardown(() => node.stop())
  node.start()
  await waitUntil(() => head.announced(INFO_HASH.toString('hex')) === 1)
  t.pass('the node announced through the lookup\'s DHT node')
  await lookup.close()
  // A KRPC ping at the lookup's UDP port: the DHT node there (now the node's) still answers.
  const socket = dgram.createSocket('udp4')
  t.teardown(() => socket.close())
  const answer = new Promise<{ y?: Uint8Array }>((resolve) => socket.once('message', (msg) => resolve(bencode.decode(msg) as { y?: Uint8Array })))
  socket.send(bencode.encode({ t: 'pp', y: 'q', q: 'ping', a: { id: randomBytes(20) } }), port, '127.0.0.1')
  t.equal(Buffer.from((await answer).y ?? []).toString(), 'r', 'closing the lookup did not stop the node\'s DHT node')
})

/** The head's DHT node on loopback, and a UDP socket to send it datagrams by hand; both closed after the test. */
async function headDhtAndSocket (t: Test) {
  const head = await startDhtBootstrap('127.0.0.1', 0, '127.0.0.1')
  t.teardown(head.close)
  const socket = dgram.createSocket('udp4')
  t.teardown(() => socket.close())
  return { head, port: Number(head.address.split(':')[1]), socket }
}

t.test('the head\'s DHT node survives malformed and hostile datagrams, and still answers', async (t) => {
  const { head, port, socket } = await headDhtAndSocket(t)
  const send = (bytes: Uint8Array) => new Promise<void>((resolve) => socket.send(bytes, port, '127.0.0.1', () => resolve()))
  const id = randomBytes(20)
  const hostile: unknown[] = [
    { t: 'aa', y: 'q', q: 'get_peers', a: { id, info_hash: 7 } }, // a number where bytes belong
    { t: 'ab', y: 'q', q: 'announce_peer', a: { id, info_hash: INFO_HASH, port: 6881, token: 5 } },
    { t: 'ac', y: 'q', q: 'find_node', a: { id, target: [1, 2] } },
    { t: 'ad', y: 'q', q: 'put', a: { id, v: 'x', token: 'nope' } },
    { t: 'ae', y: 'q', q: 'ping' },
    { t: 'af', y: 'r', r: { id: 3 } },
    { t: 5, y: 'e', e: 'x' },
    { y: 'q', q: 42, a: 'x' }
  ]
  for (const message of hostile) await send(bencode.encode(message))
  for (let i = 0; i < 200; i++) await send(randomBytes(1 + (i % 120)))
  // Still a DHT node: a lookup through it works, and an announce through it is stored.
  const node = new DhtDiscovery({
    bootstrap: [head.address], infoHash: INFO_HASH, host: '127.0.0.1', port: 41020,
    onPeers: () => {}, onWarning: (line) => t.fail(line)
  })
  t.teardown(() => node.stop())
  node.start()
  await waitUntil(() => head.announced(INFO_HASH.toString('hex')) === 1)
  t.pass('the head took a node\'s announce after the hostile datagrams')
  t.ok(head.counts().badMessages >= 1, `messages whose handling threw were dropped (${head.counts().badMessages})`)
})

t.test('a get_peers answer fits in one datagram however many nodes announced (9,000 here)', async (t) => {
  const { head, port, socket } = await headDhtAndSocket(t)
  // A query unanswered in 3 s is not sent again: an answer too big to send is the failure sought.
  const ask = krpcClient(socket, port, { timeoutMs: 3000, attempts: 1 })
  const first = await ask('get_peers', { info_hash: INFO_HASH })
  const token = first?.r?.token
  t.ok(token, 'the head answers get_peers with a token')
  // 9,000 nodes announce (ports of one host: 9,000 distinct peers), 50 at a time; one not answered
  // (a datagram dropped on the way) is sent again.
  const NODES = 9000
  for (let from = 0; from < NODES; from += 50) {
    const ports = Array.from({ length: Math.min(50, NODES - from) }, (_, i) => 10_000 + from + i)
    for (let round = 0; round < 3 && ports.length > 0; round++) {
      const answered = await Promise.all(ports.map((p) => ask('announce_peer', { info_hash: INFO_HASH, port: p, token })))
      for (let i = ports.length - 1; i >= 0; i--) if (answered[i]) ports.splice(i, 1)
    }
  }
  // Past ~8,200 peers, a list of all of them no longer fits in a UDP datagram.
  t.equal(head.announced(INFO_HASH.toString('hex')), NODES, 'every announce was taken')
  const answer = await ask('get_peers', { info_hash: INFO_HASH })
  t.ok(answer, 'get_peers is still answered')
  const values = answer?.r?.values ?? []
  t.ok(values.length > 0 && values.length <= 100, `with some of the peers, not all 9,000 (${values.length})`)
})

t.test('p2prun -n 4 --discovery dht: no tracker announce; the nodes meet in the DHT and serve each other', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const app = path.join(s.dir, 'hello')
  await promisify(execFile)(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', app])
  await writeFile(path.join(app, 'libs/libdata.so'), randomBytes(8_000_000))
  const r = await launch(s, dirs, ['-n', '4', '--launcher', 'local', '--discovery', 'dht', '--libs', path.join(app, 'libs'), '--stats', path.join(app, 'app')],
    { P2PRUN_NODE_PER_RANK: '1', P2PRUN_UPLOAD_LIMIT: String(4 * 1024 * 1024), P2PRUN_DEBUG: '2' })
  t.equal(r.exitCode, 0, String(r.stderr))
  t.equal(r.stdout.match(/hello, world, from libgreet; count 262150; plugin loaded/g)?.length, 4, 'four ranks ran')
  // A node announces after its first lookup; one whose rank ends first may stop before it has
  // (seen in CI: 3 of 4), so the count says only that announces arrived. Each node's log, below,
  // says it looked for peers in the DHT, and the bytes they traded, that they found each other there.
  t.match(r.stderr, /p2prun: [1-4] nodes? announced in the head's DHT node;/, 'nodes announced themselves in the DHT')
  const ratio = Number(r.stderr.match(/head sent .* = ([\d.]+)x the/)?.[1])
  t.ok(ratio > 0 && ratio < 3, `the head sent ${ratio}x the set to 4 nodes: nodes served each other`)
  // The agents' kept logs say where they looked for peers, and end with their counters.
  const logs = await readdir(path.join(dirs.run, 'logs'))
  t.equal(logs.length, 4, 'one kept log per node')
  let fromPeers = 0
  for (const name of logs) {
    const text = await readFile(path.join(dirs.run, 'logs', name), 'utf8')
    t.match(text, / peers: from the DHT, bootstrapped from [\d.]+:\d+\n/, `${name}: peers from the DHT, not a tracker`)
    fromPeers += Number(text.match(/"fromPeers":(\d+)/)?.[1] ?? 0)
  }
  t.ok(fromPeers > 0, `the nodes got ${fromPeers} bytes from each other`)
  await rm(path.join(dirs.run, 'logs'), { recursive: true })
  await nothingLeft(t, s, dirs)
})

t.test('--discovery dht with a description too big for the job spec: nodes get it from peers they look up in the DHT, then join through the same DHT node', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const app = path.join(s.dir, 'hello')
  await promisify(execFile)(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', app])
  // 5,000 files with random names: a description the job spec cannot carry (SPEC_DESCRIPTION_MAX).
  const many = path.join(s.dir, 'many')
  await mkdir(many)
  for (let i = 0; i < 5000; i++) await writeFile(path.join(many, `lib${randomBytes(16).toString('hex')}.so`), 'x')
  const r = await launch(s, dirs, ['-n', '3', '--launcher', 'local', '--discovery', 'dht', '--libs', path.join(app, 'libs'), '--libs', many, path.join(app, 'app')],
    { P2PRUN_NODE_PER_RANK: '1', P2PRUN_DEBUG: '2' })
  t.equal(r.exitCode, 0, String(r.stderr))
  t.equal(r.stdout.match(/hello, world, from libgreet/g)?.length, 3, 'three ranks ran')
  const logs = await readdir(path.join(dirs.run, 'logs'))
  t.equal(logs.length, 3, 'one kept log per node')
  for (const name of logs) {
    const text = await readFile(path.join(dirs.run, 'logs', name), 'utf8')
    t.match(text, /description: from a peer\n/, `${name}: the description came from the swarm, not the spec`)
    t.match(text, / peers: from the DHT, bootstrapped from [\d.]+:\d+\n/, `${name}: peers from the DHT`)
  }
  await rm(path.join(dirs.run, 'logs'), { recursive: true })
  await nothingLeft(t, s, dirs)
})

t.test('serve --discovery dht: its --out description names the DHT node and no tracker; fetches of it meet there', async (t) => {
  const { dir, libs, file } = await describedTree(t, { files: { 'liba.so': 3_000_000, 'libb.so': 2_000_000 } })
  const out = path.join(dir, 'launch.p2p.torrent')
  const head = execa(CLI, ['serve', file, '--source', libs, '--host', '127.0.0.1', '--open', '--discovery', 'dht', '--out', out,
    '--upload-limit', String(2 * 1024 * 1024)], { env: cleanEnv(), extendEnv: false, reject: false, stdin: 'ignore' })
  t.teardown(() => { head.kill('SIGTERM') })
  const m = await waitForLine(head, /^serving infohash=\S+ tracker=\S+ seeder=(\S+) dht=(\S+)$/)
  const desc = parseDescription(await readFile(out))
  t.same(desc.trackers, [], 'no tracker in the description')
  t.same(desc.dhtNodes, [m[2]], 'BEP 5 nodes: the head\'s DHT node')
  t.same(desc.seeders, [m[1]], 'and the seeder')
  const fetches = await Promise.all(['a', 'b', 'c'].map((name) => p2prun(['fetch', out, '--out', path.join(dir, name), '--store-dir', dir])))
  for (const [i, r] of fetches.entries()) {
    t.equal(r.exitCode, 0, `fetch ${i}: ${r.stderr}`)
    t.same(await snapshotTree(path.join(dir, ['a', 'b', 'c'][i] as string)), await snapshotTree(libs), `fetch ${i}: every byte`)
  }
  // Which route found a peer (the DHT, or the head's peer exchange) the unit tests above tell apart.
  t.ok(fetches.some((r) => / from the head, \S+ [KM]iB from peers/.test(r.stderr)), 'the fetches served each other')
})

/** Polls `check` every 20 ms, at most 500 times: the DHT has no event for "stored by another node". */
async function waitUntil (check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 20))
  if (!check()) throw new Error('gave up waiting')
}

t.test('with a DHT, the head hands the description past its first copies once every node that had it has left', async (t) => {
  const { dir, libs, file } = await describedTree(t, { files: { 'liba.so': 300_000 } })
  const secretHex = randomBytes(32).toString('hex')
  const secret = parseJobSecret(secretHex, 'the test secret')
  const head = execa(CLI, ['serve', file, '--source', libs, '--host', '127.0.0.1', '--discovery', 'dht'],
    { env: cleanEnv({ P2PRUN_SECRET: secretHex }), extendEnv: false, reject: false, stdin: 'ignore' })
  t.teardown(() => { head.kill('SIGTERM') })
  const [, seeder, dht] = await waitForLine(head, /^serving infohash=\S+ tracker=\S+ seeder=(\S+) dht=(\S+)$/)
  const desc = parseDescription(await readFile(file))
  // Asked of the head alone (no tracker, no DHT lookup): whether it hands the description over.
  const fromHead = (deadlineMs: number) => fetchDescriptionFromPeers({
    infoHash: Buffer.from(desc.infoHash, 'hex'), secret, trackers: [], seeders: [seeder as string], deadlineMs, accept: () => true
  })
  const node = await SwarmNode.join(desc, {
    storeDir: dir, port: 0, maxConns: 10, numwant: 10, stallTimeoutMs: 60_000, dht: [dht as string], seeders: [seeder as string], secret
  })
  t.teardown(() => node.close())
  for (let i = 0; i < HEAD_DESC_PEERS; i++) t.ok(await fromHead(10_000), `copy ${i + 1} from the head`)
  t.equal(await fromHead(1500), undefined, 'no more while a node that has it is connected: it serves the rest')
  await node.close()
  t.ok(await fromHead(10_000), 'once it has left, the head hands it to whoever asks')
})
