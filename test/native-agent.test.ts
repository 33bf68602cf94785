// The native node agent (native/agent/, dist/p2prun-agent): real FUSE mounts, real BitTorrent on
// loopback against a real `p2prun serve` head, Node agents and hand-played hostile peers beside it.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { lookup } from 'node:dns/promises'
import { lstat, mkdir, open, readdir, readFile, readlink, stat, statfs, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import { execa } from 'execa'
import t, { type Test } from 'tap'
import { isMounted } from '../lib/mount.ts'
import { parseDescription } from '../lib/description.ts'
import { REMOTE_FS_TYPES } from '../lib/file-systems.ts'
import { encodePex } from '../lib/swarm/extensions.ts'
import { LIBRARY_TREE, makeTree, snapshotTree, withSymlinks } from './helpers/fixtures.ts'
import { cleanEnv, NATIVE_AGENT, p2prun, ROOT, serve, waitForLine, type Serving } from './helpers/cli.ts'
import { ensureUnmounted, job, mountAgent, nodeArgs, type AgentStatsJson, type Job, type MountedAgent } from './helpers/mount.ts'
import { answersHandshake, handshake, liar, message, peerProof, readPeer, sendAndAwaitClose, u32 } from './helpers/peer-wire.ts'
import { freePortRange, freePorts } from './helpers/ports.ts'

const run = promisify(execFile)

function nativeAgent (j: Job, mountPoint: string, name: string, extra: readonly string[] = [], env: Record<string, string> = {}): Promise<MountedAgent> {
  return mountAgent(j, j.file, mountPoint, path.join(j.dir, `${name}.json`), [...nodeArgs(j, 'eager'), ...extra], env, [], NATIVE_AGENT)
}

/** Resolves once the agent's stderr (its P2PRUN_DEBUG log), from its start, matches `pattern`. */
function stderrLine (agent: MountedAgent, pattern: RegExp): Promise<void> {
  return new Promise((resolve) => {
    const check = () => { if (pattern.test(agent.stderrSoFar())) { agent.child.stderr?.off('data', check); resolve() } }
    agent.child.stderr?.on('data', check)
    check()
  })
}

/**
 * Connects as a proper peer of the job (its proof, then interested), sends `requests` and reads
 * nothing until `dropped`; then reads to the end and resolves with the block bytes it got.
 */
function greedyPeer (address: string, requests: Buffer, secret: string, infoHash: Buffer, dropped: Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    const [host, port] = address.split(':') as [string, string]
    const peerId = Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`)
    const socket = net.connect(Number(port), host, () => socket.write(handshake(infoHash, { extensions: true, peerId })))
    let got = Buffer.alloc(0)
    let total = 0
    socket.on('data', (chunk: Buffer) => {
      total += chunk.length
      if (got.length >= 68) return
      got = Buffer.concat([got, chunk])
      if (got.length < 68) return
      // Its proof for this pair (lib/swarm/job-auth.ts), interest, the requests; then nothing is
      // read, so what the agent queues for us only grows.
      const auth = peerProof(secret, infoHash, peerId, got.subarray(48, 68))
      socket.write(message(20, Buffer.concat([Buffer.from([0]), Buffer.from('d11:p2prun_auth32:'), auth, Buffer.from('e')])))
      socket.write(Buffer.concat([message(2), requests]))
      socket.pause()
      void dropped.then(() => socket.resume())
    })
    socket.on('error', () => {})
    socket.on('close', () => resolve(total))
  })
}

/** A job whose head requires its secret (as a launch's does): the scratch, the secret, the head, the infohash. */
async function jobWithSecret (t: Test) {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const secret = randomBytes(32).toString('hex')
  const head = await serve(j.file, j.libs, [], secret)
  j.defer(head.stop)
  return { j, secret, head, infoHash: Buffer.from(parseDescription(await readFile(j.file)).infoHash, 'hex') }
}

/** What lstat says of every entry under `root` that the two agents must agree on. */
async function statTree (root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (rel: string): Promise<void> => {
    const st = await lstat(path.join(root, rel))
    out[rel] = [st.mode.toString(8), st.nlink, st.size, st.uid, st.gid, st.mtimeMs].join(' ')
    if (st.isDirectory()) for (const name of (await readdir(path.join(root, rel))).sort()) await walk(rel === '' ? name : `${rel}/${name}`)
  }
  await walk('')
  return out
}

t.test('the native agent mounts what the Node agent mounts: the same tree, modes, links, sizes, times and bytes', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const viaNode = await mountAgent(j, j.file, path.join(j.dir, 'node-mnt'), path.join(j.dir, 'node.json'), [...nodeArgs(j, 'eager'), '--agent', 'node'])
  const native = await nativeAgent(j, path.join(j.dir, 'native-mnt'), 'native')
  t.same(await snapshotTree(native.mountPoint, 0o555), await snapshotTree(j.libs, 0o555), 'tree, modes (read-only), contents, links')
  t.same(await statTree(native.mountPoint), await statTree(viaNode.mountPoint), 'every entry as the Node agent shows it')
  await t.rejects(stat(path.join(native.mountPoint, 'libnothere.so')), { code: 'ENOENT' })
  await t.rejects(writeFile(path.join(native.mountPoint, 'new.so'), 'x'), { code: 'EROFS' })
  const { stats, exitCode } = await native.stop()
  t.equal(exitCode, 0)
  t.equal(stats.swarm.piecesHave, stats.swarm.pieceCount, 'it fetched every piece')
  t.ok(stats.fs.ops.lookup > 0 && stats.fs.ops.read > 0, 'its FUSE server counted lookups and reads')
  t.equal(await isMounted(native.mountPoint), false, 'unmounted')
  await t.rejects(stat(native.mountPoint), { code: 'ENOENT' }, 'the mount point it made is gone')
  t.equal((await viaNode.stop()).exitCode, 0)
  t.same((await readdir(j.dir)).filter((n) => n.startsWith('p2prun-')), [], 'no store left in the store directory')
})

/** The pipes process `pid` holds open. */
async function pipesOf (pid: number): Promise<number> {
  const fds = await readdir(`/proc/${pid}/fd`)
  const links = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')))
  return links.filter((l) => l.startsWith('pipe:')).length
}

for (const agent of ['native', 'node'] as const) {
  t.test(`the ${agent} agent answers a read from its store by splice: a pipe of the FUSE thread's carries the pages, none of its buffers`, async (t) => {
    const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
    // --no-passthrough: as root the kernel would read this file from the store itself (below).
    const mounted = agent === 'native'
      ? await nativeAgent(j, path.join(j.dir, 'mnt'), 'native', ['--no-passthrough'])
      : await mountAgent(j, j.file, path.join(j.dir, 'mnt'), path.join(j.dir, 'node.json'), [...nodeArgs(j, 'eager'), '--agent', 'node'])
    const pid = mounted.child.pid as number
    const before = await pipesOf(pid)
    // Larger than two pages: libfuse copies a shorter reply instead.
    t.same(await readFile(path.join(mounted.mountPoint, 'libfoo.so.1.2.3')), await readFile(path.join(j.libs, 'libfoo.so.1.2.3')), 'the bytes')
    t.ok(await pipesOf(pid) >= before + 2, `the thread that answered made its splice pipe (${before} pipes before)`)
    t.equal((await mounted.stop()).exitCode, 0)
  })
}

/** The native agent's counters now: on SIGUSR1 it writes them as one JSON line on stdout. */
function nativeStats (agent: MountedAgent): Promise<AgentStatsJson> {
  return new Promise((resolve, reject) => {
    let text = ''
    const onData = (chunk: Buffer) => {
      text += chunk.toString()
      const line = text.split('\n').find((l) => l.startsWith('{') && l.endsWith('}'))
      if (!line) return
      agent.child.stdout?.off('data', onData)
      resolve(JSON.parse(line) as AgentStatsJson)
    }
    // waitForLine's reader paused the stream when it found the mounted line.
    agent.child.stdout?.on('data', onData).resume()
    agent.child.then((r) => reject(new Error(`the agent exited (${r.exitCode}): ${r.stderr}`)), reject)
    agent.child.kill('SIGUSR1')
  })
}

/** How many of the store's files process `pid` holds (made in the store directory, unlinked at once). */
async function storeFilesOf (pid: number): Promise<number> {
  const fds = await readdir(`/proc/${pid}/fd`)
  const links = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')))
  return links.filter((l) => /\/p2prun-store-\w+ \(deleted\)$/.test(l)).length
}

/** The set's files of 64 KiB or more (store.c's OWN_FILE_MIN), which have files of their own in the store. */
const LARGE_FILES = ['libfoo.so.1.2.3', 'libbar.so.2.0', 'python/ext module é.so']
const SMALL_FILE = 'share/README'

/** sha256 of `file` read through a shared mapping of it (python3's mmap), as the loader maps a library. */
async function mappedHash (file: string): Promise<string> {
  const script = 'import hashlib, mmap, sys\nwith open(sys.argv[1], "rb") as f:\n  m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n  print(hashlib.sha256(m).hexdigest())'
  return (await run('python3', ['-c', script, file])).stdout.trim()
}

const sha256 = async (file: string) => (await run('sha256sum', [file])).stdout.split(' ')[0] as string

t.test('with CAP_SYS_ADMIN the native agent has the kernel read and map its large files from the store (FUSE passthrough); --no-passthrough serves them itself', { skip: process.getuid?.() !== 0 && 'needs root (CAP_SYS_ADMIN)' }, async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const sizes = await Promise.all([...LARGE_FILES, SMALL_FILE].map(async (f) => (await stat(path.join(j.libs, f))).size))
  for (const passthrough of [true, false]) {
    const mounted = await nativeAgent(j, path.join(j.dir, `mnt-${passthrough}`), `native-${passthrough}`, passthrough ? [] : ['--no-passthrough'])
    t.equal(await storeFilesOf(mounted.child.pid as number), passthrough ? 1 + LARGE_FILES.length : 1,
      passthrough ? 'a store file for the small files, one for each large file' : 'one store file')
    for (const f of [...LARGE_FILES, SMALL_FILE]) {
      t.equal(await sha256(path.join(mounted.mountPoint, f)), await sha256(path.join(j.libs, f)), `${f}: read`)
      t.equal(await mappedHash(path.join(mounted.mountPoint, f)), await sha256(path.join(j.libs, f)), `${f}: mapped`)
    }
    const { stats, exitCode } = await mounted.stop()
    t.equal(exitCode, 0)
    const served = stats.fs.bytesServedLocal + stats.fs.bytesServedAfterFetch
    if (passthrough) {
      t.equal(stats.fs.passthroughOpens, 2 * LARGE_FILES.length, 'every open of a large file in passthrough (a read and a mapping each)')
      t.equal(served, sizes.at(-1), 'the agent itself served the small file\'s bytes only')
    } else {
      t.equal(stats.fs.passthroughOpens, 0, 'no open in passthrough')
      t.equal(served, sizes.reduce((a, b) => a + b, 0), 'the agent served every byte')
    }
  }
})

t.test('passthrough waits for an inode\'s opens through the page cache to end: the kernel refuses to mix the two (EIO to the opener)', { skip: process.getuid?.() !== 0 && 'needs root (CAP_SYS_ADMIN)' }, async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  // Block mode answers an open at once: an incomplete file's open goes through the page cache.
  const mounted = await nativeAgent(j, path.join(j.dir, 'mnt'), 'native', ['--mode', 'block'])
  const file = path.join(mounted.mountPoint, 'libfoo.so.1.2.3')
  const want = await readFile(path.join(j.libs, 'libfoo.so.1.2.3'))
  const first = await open(file)
  t.same((await first.readFile()), want, 'the first open (before the file was in) reads it whole')
  const second = await open(file)
  t.same(Buffer.from((await second.read(Buffer.alloc(want.length), 0, want.length, 0)).buffer), want, 'a second open while the first lives: the file is complete now, and opened through the page cache as the first')
  t.equal((await nativeStats(mounted)).fs.passthroughOpens, 0, 'neither in passthrough')
  await first.close()
  await second.close()
  // The kernel tells the agent of each close (a release) after it has let the open go.
  let released = 0
  while (released < 2) released = (await nativeStats(mounted)).fs.ops.release ?? 0
  t.same(await readFile(file), want, 'an open after both ended reads it')
  t.equal((await nativeStats(mounted)).fs.passthroughOpens, 1, 'in passthrough')
  t.equal((await mounted.stop()).exitCode, 0)
})

t.test('native and Node agents of one job swarm together behind its secret', async (t) => {
  const secret = randomBytes(32).toString('hex')
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    for (const name of ['liba.so', 'libb.so', 'libc.so']) await writeFile(path.join(dir, 'libs', name), randomBytes(3_000_000))
    return path.join(dir, 'libs')
  })
  // This job's head needs the secret; a slow one, so the nodes fetch from each other.
  await j.head.stop()
  const head = await serve(j.file, j.libs, ['--upload-limit', String(2 * 1024 * 1024)], secret)
  j.defer(head.stop)
  const args = ['--mode', 'eager', '--tracker', head.tracker, '--seeder', head.seeder, '--store-dir', j.dir]
  const env = { P2PRUN_SECRET: secret }
  const agents = await Promise.all([1, 2, 3].map((k) => mountAgent(j, j.file, path.join(j.dir, `native${k}`), path.join(j.dir, `native${k}.json`), args, env, [], NATIVE_AGENT)))
  agents.push(await mountAgent(j, j.file, path.join(j.dir, 'node'), path.join(j.dir, 'node.json'), [...args, '--agent', 'node'], env))
  const want = await snapshotTree(j.libs, 0o555)
  for (const agent of agents) t.same(await snapshotTree(agent.mountPoint, 0o555), want, `${path.basename(agent.mountPoint)}: every byte`)
  const stopped = await Promise.all(agents.map((a) => a.stop()))
  t.same(stopped.map((s) => s.exitCode), [0, 0, 0, 0])
  const fromPeers = stopped.reduce((sum, s) => sum + s.stats.swarm.fromPeers, 0)
  t.ok(fromPeers > 0, `the nodes sent each other ${fromPeers} bytes`)
  t.ok(stopped.slice(0, 3).every((s) => s.stats.swarm.failedPieces === 0), 'no piece failed its check')
})

t.test('a program linked against the mounted libraries runs from the native mount, and dlopens by name', async (t) => {
  const j = await job(t, async (dir) => {
    await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', path.join(dir, 'hello')])
    return path.join(dir, 'hello/libs')
  })
  const native = await nativeAgent(j, path.join(j.dir, 'mnt'), 'native')
  const env = { ...process.env, LD_LIBRARY_PATH: `${j.dir}/nothing-here:${native.mountPoint}/missing:${native.mountPoint}` }
  const app = await run(path.join(j.dir, 'hello/app'), [], { env })
  t.match(app.stdout, /hello, world, from libgreet; count 262150; plugin loaded/)
  for (const lib of ['libgreet.so.1', 'libcount.so.2', 'libplugin.so']) {
    t.match(app.stdout, new RegExp(`lib ${native.mountPoint}/${lib.replaceAll('.', '\\.')}\\n`), `${lib} came from the mount`)
  }
  t.equal((await native.stop()).exitCode, 0)
})

t.test('hostile bytes end a connection, never the agent; without the job proof nobody gets in', async (t) => {
  const secret = randomBytes(32).toString('hex')
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  await j.head.stop()
  const head = await serve(j.file, j.libs, [], secret)
  j.defer(head.stop)
  const [port] = await freePorts(1) as [number]
  const native = await mountAgent(j, j.file, path.join(j.dir, 'mnt'), path.join(j.dir, 'native.json'),
    ['--tracker', head.tracker, '--seeder', head.seeder, '--store-dir', j.dir, '--port', String(port)], { P2PRUN_SECRET: secret, P2PRUN_DEBUG: '1' }, [], NATIVE_AGENT)
  const address = `127.0.0.1:${port}`
  // One that connects and says nothing: the agent closes it once its handshake is overdue (10 s).
  const silent = sendAndAwaitClose(address, Buffer.alloc(0))
  const infoHash = Buffer.from(parseDescription(await readFile(j.file)).infoHash, 'hex')
  const hostile: Array<[string, Buffer]> = [
    ['a handshake for another torrent', handshake(randomBytes(20))],
    ['not BitTorrent at all', Buffer.from('GET / HTTP/1.0\r\n\r\n'.padEnd(68, ' '))],
    ['a handshake without the extension protocol (no way to prove the secret)', handshake(infoHash, { extensions: false })],
    ['a wrong proof', Buffer.concat([handshake(infoHash, { extensions: true }), message(20, Buffer.concat([Buffer.from([0]), Buffer.from('d11:p2prun_auth32:'), randomBytes(32), Buffer.from('e')]))])],
    ['a message of 4 GiB instead of the proof', Buffer.concat([handshake(infoHash, { extensions: true }), u32(0xffffffff)])],
    ['the 5 bytes that once crashed the seeder', Buffer.concat([handshake(infoHash, { extensions: true }), Buffer.from('0000000104', 'hex')])]
  ]
  for (const [name, bytes] of hostile) {
    await sendAndAwaitClose(address, bytes)
    t.ok(await answersHandshake(address, infoHash, { extensions: true }), `${name}: the agent closed that connection and answers the next`)
  }
  for (let i = 0; i < 40; i++) {
    const noise = randomBytes(1 + Math.floor(Math.random() * 200))
    await sendAndAwaitClose(address, Buffer.concat([handshake(infoHash, { extensions: true }), i % 2 === 0 ? Buffer.concat([u32(noise.length), noise]) : noise]), true)
  }
  t.same(await snapshotTree(native.mountPoint, 0o555), await snapshotTree(j.libs, 0o555), 'after 40 streams of noise it still serves every byte')
  t.same(await silent, Buffer.alloc(0), 'a connection that never said anything was closed, unanswered')
  // One that asks for its first piece over and over (64 MiB in all) and reads nothing: dropped once
  // more than 16 MiB wait for it beyond what the sockets hold.
  const desc = parseDescription(await readFile(j.file))
  const first = Math.min(desc.pieceLength, desc.totalBytes, 128 * 1024)
  const asked = Math.ceil(64 * 1024 * 1024 / first) * first
  const greedy = Buffer.concat(Array.from({ length: asked / first }, () => message(6, Buffer.concat([u32(0), u32(0), u32(first)]))))
  const dropped = stderrLine(native, /closed: it does not read what it asks for/)
  const received = await greedyPeer(address, greedy, secret, infoHash, dropped)
  t.ok(received < asked, `a peer that asks and never reads is dropped: it got ${received} of the ${asked} bytes it asked for`)
  t.equal((await native.stop()).exitCode, 0)
})

/**
 * A p2prun peer of the job played by hand, through the handshake, its proof and interest; `ask`
 * sends a request and resolves with the id of the message that answers it (7: the block, 16: a
 * BEP 6 reject).
 */
async function provenPeer (address: string, secret: string, infoHash: Buffer): Promise<{ ask: (request: Buffer) => Promise<number>, close: () => void }> {
  const [host, port] = address.split(':') as [string, string]
  const peerId = Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`)
  const socket = net.connect(Number(port), host, () => socket.write(handshake(infoHash, { extensions: true, peerId })))
  socket.on('error', () => {})
  let buffered = Buffer.alloc(0)
  let shook = false
  let answered: (id: number) => void = () => {}
  const ready = new Promise<void>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      if (!shook) {
        if (buffered.length < 68) return
        shook = true
        // The proof binds both peer ids (lib/swarm/job-auth.ts): the agent's is in its handshake.
        const auth = peerProof(secret, infoHash, peerId, buffered.subarray(48, 68))
        socket.write(Buffer.concat([message(20, Buffer.concat([Buffer.from([0]), Buffer.from('d11:p2prun_auth32:'), auth, Buffer.from('e')])), message(2)]))
        buffered = buffered.subarray(68)
        resolve()
      }
      while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
        const id = buffered[4]
        buffered = buffered.subarray(4 + buffered.readUInt32BE(0))
        if (id === 7 || id === 16) answered(id)
      }
    })
  })
  await ready
  return {
    ask: (request) => new Promise<number>((resolve) => { answered = resolve; socket.write(request) }),
    close: () => socket.destroy()
  }
}

t.test('the fan-out: in block mode a piece goes to one peer at a time, the next asker is turned down; in eager mode to three', async (t) => {
  const { j, secret, head, infoHash } = await jobWithSecret(t)
  for (const [mode, served] of [['block', 1], ['eager', 2]] as const) {
    const port = (await freePorts(1))[0] as number
    const native = await mountAgent(j, j.file, path.join(j.dir, `mnt-${mode}`), path.join(j.dir, `${mode}.json`),
      ['--mode', mode, '--tracker', head.tracker, '--seeder', head.seeder, '--store-dir', j.dir, '--port', String(port)], { P2PRUN_SECRET: secret }, [], NATIVE_AGENT)
    t.same(await snapshotTree(native.mountPoint, 0o555), await snapshotTree(j.libs, 0o555), `${mode}: every byte read, so every piece is here`)
    const peers = [await provenPeer(`127.0.0.1:${port}`, secret, infoHash), await provenPeer(`127.0.0.1:${port}`, secret, infoHash)]
    // Both ask for the same block at once (one write each, back to back): within one fan-out window.
    const request = message(6, Buffer.concat([u32(0), u32(0), u32(16384)]))
    const answers = await Promise.all(peers.map((p) => p.ask(request)))
    t.same(answers.filter((id) => id === 7).length, served, `${mode}: ${served} of 2 askers got the block`)
    t.same(answers.filter((id) => id === 16).length, 2 - served, `${mode}: the rest were turned down (BEP 6 reject)`)
    for (const p of peers) p.close()
    t.equal((await native.stop()).exitCode, 0)
  }
})

t.test('a node list\'s node (--no-trackers, --peer, --head-fallback): its peers dialed until they are up; the head only once a read waited that long without a block', async (t) => {
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    for (const name of ['liba.so', 'libb.so']) await writeFile(path.join(dir, 'libs', name), randomBytes(1_500_000))
    return path.join(dir, 'libs')
  })
  const [port, closed] = await freePorts(2) as [number, number]
  // The description names the head's tracker (outside the infohash): --no-trackers leaves it unasked.
  const withTracker = path.join(j.dir, 'tracked.p2p.torrent')
  t.equal((await p2prun(['describe', j.libs, '-o', withTracker, '--tracker', j.head.tracker])).exitCode, 0)
  const listNode = (name: string, mode: string, extra: string[]) => mountAgent(j, withTracker, path.join(j.dir, name), path.join(j.dir, `${name}.json`),
    ['--mode', mode, '--store-dir', j.dir, '--seeder', j.head.seeder, '--no-trackers', ...extra], { P2PRUN_DEBUG: '1' }, [], NATIVE_AGENT)
  // A lists B, which is not up yet: the dial is refused, and made again once B listens.
  const a = await listNode('a', 'block', ['--peer', `127.0.0.1:${port}`, '--head-fallback', '600'])
  await stderrLine(a, new RegExp(`127\\.0\\.0\\.1:${port} \\(setting up\\): closed`))
  const b = await mountAgent(j, j.file, path.join(j.dir, 'b'), path.join(j.dir, 'b.json'), [...nodeArgs(j, 'eager'), '--port', String(port)], {}, [], NATIVE_AGENT)
  t.same(await snapshotTree(b.mountPoint, 0o555), await snapshotTree(j.libs, 0o555), 'B, from the head: every byte')
  t.ok((await readFile(path.join(a.mountPoint, 'liba.so'))).equals(await readFile(path.join(j.libs, 'liba.so'))), 'A: liba.so, from B')
  t.notMatch(a.stderrSoFar(), /tracker|dialing the head/, 'A asked no tracker (its description names one) and did not dial the head')
  // C's listed peer never comes up: its read waits, no block comes, and it dials the head.
  const c = await listNode('c', 'block', ['--peer', `127.0.0.1:${closed}`, '--head-fallback', '0'])
  t.ok((await readFile(path.join(c.mountPoint, 'libb.so'))).equals(await readFile(path.join(j.libs, 'libb.so'))), 'C: libb.so')
  t.match(c.stderrSoFar(), /no block for 0 ms while something waits: dialing the head/)
  const [sa, sb, sc] = await Promise.all([a, b, c].map((agent) => agent.stop()))
  t.same([sa?.exitCode, sb?.exitCode, sc?.exitCode], [0, 0, 0])
  t.equal(sa?.stats.swarm.fromHead, 0, 'A took nothing from the head')
  t.ok((sa?.stats.swarm.fromPeers ?? 0) >= 1_500_000, 'A took liba.so from B')
  t.ok((sc?.stats.swarm.fromHead ?? 0) >= 1_500_000, 'C took libb.so from the head')
})

t.test('eager mode: with nothing read, every node fetches the whole set, from the head and from each other', async (t) => {
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    for (const name of ['liba.so', 'libb.so', 'libc.so']) await writeFile(path.join(dir, 'libs', name), randomBytes(2_000_000))
    return path.join(dir, 'libs')
  })
  // A slow head, so the nodes have pieces to give each other: the rarest-first scan of each peer's
  // pieces is what fetches them (no read asks for any), and it skips a peer with none this node
  // has not started.
  const secret = randomBytes(32).toString('hex')
  await j.head.stop()
  const head = await serve(j.file, j.libs, ['--upload-limit', String(2 * 1024 * 1024)], secret)
  j.defer(head.stop)
  const args = ['--mode', 'eager', '--tracker', head.tracker, '--seeder', head.seeder, '--store-dir', j.dir]
  const agents = await Promise.all([1, 2, 3].map((k) =>
    mountAgent(j, j.file, path.join(j.dir, `n${k}`), path.join(j.dir, `n${k}.json`), args, { P2PRUN_SECRET: secret, P2PRUN_DEBUG: '1' }, [], NATIVE_AGENT)))
  await Promise.all(agents.map((agent) => stderrLine(agent, /every piece is in/)))
  const stopped = await Promise.all(agents.map((agent) => agent.stop()))
  t.same(stopped.map((s) => s.exitCode), [0, 0, 0])
  t.same(stopped.map((s) => s.stats.swarm.piecesHave), stopped.map((s) => s.stats.swarm.pieceCount), 'every node has every piece')
  t.same(stopped.map((s) => s.stats.fs.ops.read), [0, 0, 0], 'and nothing was read')
  const fromPeers = stopped.reduce((sum, s) => sum + s.stats.swarm.fromPeers, 0)
  t.ok(fromPeers > 0, `the nodes sent each other ${fromPeers} bytes`)
})

t.test('a read\'s piece is asked of the least advanced peer that holds it, not of the complete one', async (t) => {
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    for (const name of ['liba.so', 'libb.so']) await writeFile(path.join(dir, 'libs', name), randomBytes(2_000_000))
    return path.join(dir, 'libs')
  })
  const start = (name: string, mode: string, env: Record<string, string> = {}) =>
    mountAgent(j, j.file, path.join(j.dir, name), path.join(j.dir, `${name}.json`), nodeArgs(j, mode), env, [], NATIVE_AGENT)
  const want = await readFile(path.join(j.libs, 'liba.so'))
  // A has every piece; B, in block mode, only liba.so's (read through its mount).
  const complete = await start('complete', 'eager')
  t.same(await snapshotTree(complete.mountPoint, 0o555), await snapshotTree(j.libs, 0o555), 'A: every byte')
  const partial = await start('partial', 'block')
  t.ok((await readFile(path.join(partial.mountPoint, 'liba.so'))).equals(want), 'B: liba.so')
  // C knows what the head, A and B have (their bitfields, which its log says) before it reads.
  const reader = await start('reader', 'block', { P2PRUN_DEBUG: '1' })
  await stderrLine(reader, /(has [1-9]\d* of \d+ pieces[^]*){3}/)
  t.ok((await readFile(path.join(reader.mountPoint, 'liba.so'))).equals(want), 'C: liba.so')
  const [a, b, c] = await Promise.all([complete, partial, reader].map((agent) => agent.stop()))
  t.same([a?.exitCode, b?.exitCode, c?.exitCode], [0, 0, 0])
  t.equal(c?.stats.swarm.fromHead, 0, 'C took nothing from the head: peers hold it')
  t.equal(b?.stats.swarm.uploaded, c?.stats.swarm.fromPeers, 'C took every block from B')
  t.equal(a?.stats.swarm.uploaded, b?.stats.swarm.fromPeers, 'A sent only what B took from it, nothing to C')
})

/**
 * A peer of the job played by hand that connects to `port`, says it listens on `listenPort` and
 * takes ut_pex; `told` resolves with the addresses of the first ut_pex message it gets, or with none
 * if the unchoke that answers its interest comes first (the agent tells a peer once it is open,
 * before it reads what the peer sent next).
 */
function pexPeer (port: number, secret: string, infoHash: Buffer, listenPort: number): { told: Promise<string[]>, close: () => void } {
  const peerId = Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`)
  const socket = net.connect(port, '127.0.0.1', () => socket.write(handshake(infoHash, { extensions: true, peerId })))
  socket.on('error', () => {})
  const told = new Promise<string[]>((resolve) => {
    readPeer(socket, (msg) => {
      if (msg[0] === 1) resolve([])
      if (msg[0] !== 20 || msg[1] !== 1) return // ut_pex under the id this peer gave it
      const added = msg.subarray(2).toString('latin1').match(/^d5:added(\d+):/)
      if (!added) return
      const compact = msg.subarray(2 + added[0].length, 2 + added[0].length + Number(added[1]))
      resolve(Array.from({ length: compact.length / 6 }, (_, i) => `${[...compact.subarray(6 * i, 6 * i + 4)].join('.')}:${compact.readUInt16BE(6 * i + 4)}`))
    }, () => {})
  })
  socket.once('data', (chunk: Buffer) => {
    // Its proof binds both ids: the agent's is in the handshake's last 20 bytes.
    const auth = peerProof(secret, infoHash, peerId, chunk.subarray(48, 68))
    socket.write(Buffer.concat([message(20, Buffer.concat([Buffer.from(`\0d1:md6:ut_pexi1ee1:pi${listenPort}e11:p2prun_auth32:`, 'latin1'), auth, Buffer.from('e')])), message(2)]))
  })
  return { told, close: () => socket.destroy() }
}

t.test('a new peer is told where the agent\'s other peers listen (ut_pex), not of itself', async (t) => {
  const { j, secret, head, infoHash } = await jobWithSecret(t)
  const port = (await freePorts(1))[0] as number
  const agent = await mountAgent(j, j.file, path.join(j.dir, 'mnt'), path.join(j.dir, 'agent.json'),
    ['--tracker', head.tracker, '--seeder', head.seeder, '--store-dir', j.dir, '--port', String(port)], { P2PRUN_SECRET: secret, P2PRUN_DEBUG: '1' }, [], NATIVE_AGENT)
  const [first, second] = [pexPeer(port, secret, infoHash, 40001), pexPeer(port, secret, infoHash, 40002)]
  await stderrLine(agent, /(open \(accepted[^]*){2}/)
  const newcomer = pexPeer(port, secret, infoHash, 40003)
  const told = await newcomer.told
  t.ok(told.includes('127.0.0.1:40001') && told.includes('127.0.0.1:40002'), `the two others, at the ports they listen on: ${told.join(' ')}`)
  t.notOk(told.includes('127.0.0.1:40003'), 'not itself')
  for (const p of [first, second, newcomer]) p.close()
})

// From the head, a referral (lib/swarm/seeder.ts: where a piece it turned down went) is dialed
// whole, but in eager mode; from a node it is plain peer exchange, so a node cannot make the others
// dial all it names.
for (const [from, mode] of [['the head', 'block'], ['a node', 'block'], ['the head', 'eager']] as const) {
  t.test(`peers told of (ut_pex, a tracker) are dialed only while the agent has fewer than --numwant connections; a referral from ${from}, ${mode} mode`, async (t) => {
    const { j, secret, head, infoHash } = await jobWithSecret(t)
    const port = (await freePorts(1))[0] as number
    const agent = await mountAgent(j, j.file, path.join(j.dir, 'mnt'), path.join(j.dir, 'agent.json'),
      ['--mode', mode, '--seeder', head.seeder, '--store-dir', j.dir, '--port', String(port), '--numwant', '3'], { P2PRUN_SECRET: secret, P2PRUN_DEBUG: '1' }, [], NATIVE_AGENT)
    // A peer that tells the agent of ten more (nobody listens there: each dial is a line all the same).
    const told = await freePorts(10)
    const peerId = Buffer.from(`${from === 'the head' ? '-P2H020' : '-P2N020'}-${randomBytes(6).toString('hex')}`)
    const socket = net.connect(port, '127.0.0.1', () => socket.write(handshake(infoHash, { extensions: true, peerId })))
    const connected = new Promise((resolve) => socket.once('connect', resolve))
    socket.on('error', () => {})
    j.defer(async () => { socket.destroy() })
    socket.once('data', (chunk: Buffer) => {
      const auth = peerProof(secret, infoHash, peerId, chunk.subarray(48, 68))
      socket.write(message(20, Buffer.concat([Buffer.from('\0d1:md6:ut_pexi1ee11:p2prun_auth32:', 'latin1'), auth, Buffer.from('e')])))
    })
    // Then a referral of five more, and the end of the connection: once the agent has closed it, it
    // has taken both messages before it.
    const referred = await freePorts(5)
    const pex = (id: number, ports: number[], referral: boolean) => message(20, encodePex(id, ports.map((p) => `127.0.0.1:${p}`), referral))
    readPeer(socket, (msg) => {
      const pexId = msg[0] === 20 && msg[1] === 0 ? msg.toString('latin1').match(/6:ut_pexi(\d+)e/)?.[1] : undefined
      if (pexId === undefined) return
      socket.end(Buffer.concat([pex(Number(pexId), told, false), pex(Number(pexId), referred, true)]))
    }, () => {})
    const dialsOf = (ports: number[]) => agent.stderrSoFar().split('\n').filter((line) => ports.some((p) => line.includes(`127.0.0.1:${p}: dialing`)))
    await connected
    await stderrLine(agent, new RegExp(`127\\.0\\.0\\.1:${socket.localPort} \\(open\\): closed`))
    agent.child.kill('SIGTERM')
    await agent.child
    t.equal(dialsOf(told).length, 1, `the head and the peer that told, then one of the ten: ${dialsOf(told).join('; ')}`)
    // Else at most the one a failed dial of the ten may have freed meanwhile.
    if (from === 'the head' && mode === 'block') t.equal(dialsOf(referred).length, 5, 'the referral: each of the five')
    else t.ok(dialsOf(referred).length <= 1, `the referral: as told peers are, up to --numwant: ${dialsOf(referred).join('; ')}`)
  })
}

t.test('a store that fills up after the mount: what waits fails (EIO) with one line, what is in is still read, the agent lives on', async (t) => {
  const [small, big] = [randomBytes(200_000), randomBytes(3_000_000)]
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    await writeFile(path.join(dir, 'libs/libsmall.so'), small)
    await writeFile(path.join(dir, 'libs/libbig.so'), big)
    return path.join(dir, 'libs')
  })
  const store = path.join(j.dir, 'store')
  await mkdir(store)
  await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', store])
  j.defer(() => run('umount', ['--lazy', store]).catch(() => {})) // after the agent has stopped (last registered, first run)
  const mnt = path.join(j.dir, 'mnt')
  const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'agent.json'),
    ['--mode', 'block', '--tracker', j.head.tracker, '--seeder', j.head.seeder, '--store-dir', store], {}, [], NATIVE_AGENT)
  t.ok((await readFile(path.join(mnt, 'libsmall.so'))).equals(small), 'a file read while there is room')
  const { bavail, bsize } = await statfs(store)
  await writeFile(path.join(store, 'filler'), Buffer.alloc(bavail * bsize))
  await t.rejects(readFile(path.join(mnt, 'libbig.so')), { code: 'EIO' }, 'a read of what cannot be stored fails')
  t.ok((await readFile(path.join(mnt, 'libsmall.so'))).equals(small), 'what is in is still read')
  const { stderr, exitCode } = await agent.stop()
  t.equal(stderr.match(/cannot write to the store \S+: No space left on device \(hint: /g)?.length, 1, `said once: ${stderr}`)
  t.equal(exitCode, 0, 'the agent lived on until stopped')
})

t.test('the head hears a have for each piece it sent (it holds a piece for its first recipient until then); a complete peer hears none; the Node agent too', async (t) => {
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    await writeFile(path.join(dir, 'libs/libbig.so'), randomBytes(1_000_000))
    return path.join(dir, 'libs')
  })
  const desc = parseDescription(await readFile(j.file))
  const bytes = await readFile(path.join(j.libs, 'libbig.so'))
  const infoHash = Buffer.from(desc.infoHash, 'hex')
  // Hand-played peers with every piece, an open job's: the head (its peer id says so) and a node.
  const played = (id: string) => {
    const sent = new Set<number>()
    const told: number[] = []
    const server = net.createServer((socket) => {
      socket.on('error', () => {})
      readPeer(socket, (msg) => {
        if (msg[0] === 4) told.push(msg.readUInt32BE(1))
        if (msg[0] !== 6) return
        const [index, begin, length] = [msg.readUInt32BE(1), msg.readUInt32BE(5), msg.readUInt32BE(9)]
        sent.add(index)
        const at = index * desc.pieceLength + begin
        socket.write(message(7, Buffer.concat([u32(index), u32(begin), bytes.subarray(at, at + length)])))
      }, () => socket.write(Buffer.concat([handshake(infoHash, { peerId: Buffer.from(`${id}${randomBytes(6).toString('hex')}`) }), message(0x0e), message(1)])))
    })
    j.defer(() => new Promise<void>((resolve) => { server.close(() => resolve()) }))
    return { server, sent, told, listening: new Promise<string>((resolve) => server.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(server.address() as net.AddressInfo).port}`))) }
  }
  // One agent with the head alone (a read's pieces are asked of the head only when no other peer
  // holds them), another with the node alone.
  const head = played('-P2H020-')
  const fromHead = await mountAgent(j, j.file, path.join(j.dir, 'mnt'), path.join(j.dir, 'agent.json'),
    ['--mode', 'block', '--seeder', await head.listening, '--store-dir', j.dir], {}, [], NATIVE_AGENT)
  t.same(await readFile(path.join(fromHead.mountPoint, 'libbig.so')), bytes, 'read whole, from the head')
  t.equal((await fromHead.stop()).exitCode, 0) // haves leave at the next tick; a stop flushes them
  t.ok(head.sent.size > 0, `the head sent ${head.sent.size} pieces`)
  t.same([...new Set(head.told)].sort((a, b) => a - b), [...head.sent].sort((a, b) => a - b), 'the head heard of each of its pieces, and of no other')
  const node = played('-P2N020-')
  const fromNode = await mountAgent(j, j.file, path.join(j.dir, 'mnt2'), path.join(j.dir, 'agent2.json'),
    ['--mode', 'block', '--peer', await node.listening, '--no-trackers', '--store-dir', j.dir], {}, [], NATIVE_AGENT)
  t.same(await readFile(path.join(fromNode.mountPoint, 'libbig.so')), bytes, 'read whole, from the node')
  t.equal((await fromNode.stop()).exitCode, 0)
  t.ok(node.sent.size > 0, `the node sent ${node.sent.size} pieces`)
  t.same(node.told, [], 'the node, which has them all, heard of none')

  // The Node agent (DHT, lingering agents) does the same.
  const again = played('-P2H020-')
  const viaNode = await mountAgent(j, j.file, path.join(j.dir, 'node-mnt'), path.join(j.dir, 'node.json'),
    ['--mode', 'block', '--seeder', await again.listening, '--store-dir', j.dir, '--agent', 'node'])
  t.same(await readFile(path.join(viaNode.mountPoint, 'libbig.so')), bytes, 'the Node agent read it whole, from the head')
  t.equal((await viaNode.stop()).exitCode, 0)
  t.same([...new Set(again.told)].sort((a, b) => a - b), [...again.sent].sort((a, b) => a - b), 'the head heard of each of its pieces from the Node agent')
})

t.test('a peer whose blocks fail their check is dropped and refused; the set comes whole from the head', async (t) => {
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    await writeFile(path.join(dir, 'libs/libbig.so'), randomBytes(4_000_000))
    return path.join(dir, 'libs')
  }, ['--upload-limit', String(1024 * 1024)])
  const infoHash = Buffer.from(parseDescription(await readFile(j.file)).infoHash, 'hex')
  const junk = await liar(t, infoHash)
  const native = await nativeAgent(j, path.join(j.dir, 'mnt'), 'native', ['--seeder', `127.0.0.1:${junk.port}`])
  t.same(await snapshotTree(native.mountPoint, 0o555), await snapshotTree(j.libs, 0o555), 'every byte right')
  const { stats } = await native.stop()
  t.ok(junk.counts.requests > 0, `the liar was asked for ${junk.counts.requests} blocks`)
  t.ok((stats.swarm.failedPieces ?? 0) > 0, `${stats.swarm.failedPieces} pieces failed their check`)
  t.same([junk.counts.connections, junk.counts.closed], [1, 1], 'its one connection was dropped, and not made again')
})

t.test('a block\'s second copy after the first was hashed is dropped: the store keeps the bytes the piece was checked with', async (t) => {
  const content = randomBytes(64 * 1024) // one piece of four blocks
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    await writeFile(path.join(dir, 'libs/libone.so'), content)
    return path.join(dir, 'libs')
  })
  const infoHash = Buffer.from(parseDescription(await readFile(j.file)).infoHash, 'hex')
  // Two peers with every piece (so the head is not asked). The one first asked for a block holds
  // it; the agent asks the other for it once the read has waited ENDGAME_AFTER_MS. That one sends
  // block 0 at once (in order: the agent hashes it as it comes); then the first sends junk for
  // block 0 and the right bytes for the others it holds, and the other the rest it was asked for.
  interface Held { index: number, begin: number, length: number }
  interface Peer { socket?: net.Socket, held: Held[], interested: () => void }
  const firstAsked = new Map<string, Peer>()
  const send = (peer: Peer, r: Held, bytes: Buffer) => peer.socket?.write(message(7, Buffer.concat([u32(r.index), u32(r.begin), bytes])))
  const correct = (r: Held) => content.subarray(r.begin, r.begin + r.length)
  const afterJunk: Array<() => void> = []
  let junkSent = false
  const asked = (me: Peer, r: Held) => {
    const first = firstAsked.get(`${r.index}:${r.begin}`)
    if (!first) { firstAsked.set(`${r.index}:${r.begin}`, me); me.held.push(r); return }
    if (first === me) return
    if (r.begin !== 0) { if (junkSent) send(me, r, correct(r)); else afterJunk.push(() => send(me, r, correct(r))); return }
    send(me, r, correct(r))
    for (const h of first.held) send(first, h, h.begin === 0 ? randomBytes(h.length) : correct(h))
    junkSent = true
    for (const later of afterJunk) later()
  }
  const interested: Array<Promise<void>> = []
  const peer = async (): Promise<number> => {
    const me: Peer = { held: [], interested: () => {} }
    interested.push(new Promise((resolve) => { me.interested = resolve }))
    const server = net.createServer((socket) => {
      me.socket = socket
      socket.on('error', () => {})
      readPeer(socket, (msg) => {
        if (msg[0] === 2) me.interested()
        else if (msg[0] === 6 && msg.length === 13) asked(me, { index: msg.readUInt32BE(1), begin: msg.readUInt32BE(5), length: msg.readUInt32BE(9) })
      }, () => socket.write(Buffer.concat([handshake(infoHash), message(0x0e), message(1)])))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { server.close() })
    return (server.address() as net.AddressInfo).port
  }
  const ports = [await peer(), await peer()]
  const native = await mountAgent(j, j.file, path.join(j.dir, 'mnt'), path.join(j.dir, 'native.json'),
    [...nodeArgs(j, 'block'), ...ports.flatMap((port) => ['--seeder', `127.0.0.1:${port}`])], {}, [], NATIVE_AGENT)
  await Promise.all(interested) // both connected: the head, whose pieces they hold, is not asked
  t.ok((await readFile(path.join(native.mountPoint, 'libone.so'))).equals(content), 'the bytes read are the ones checked')
  t.ok(junkSent, 'junk for block 0 came after its right bytes')
  const { stats } = await native.stop()
  t.equal(stats.swarm.failedPieces, 0, 'no piece failed its check')
})

t.test('native agents in their own mount namespaces on one host keep their mounts while another leaves; the last removes the mount point', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  // The agents create the mount point and its parent (neither exists yet), by lib/mount.ts's rules.
  const mnt = path.join(j.dir, 'not-yet/mnt')
  const privateNs = ['unshare', '--mount', '--propagation', 'private']
  const agents = []
  for (const k of [1, 2]) agents.push(await mountAgent(j, j.file, mnt, path.join(j.dir, `n${k}.json`), nodeArgs(j, 'eager'), {}, privateNs, NATIVE_AGENT))
  const [first, second] = agents as [MountedAgent, MountedAgent]
  t.equal(await isMounted(mnt), false, 'neither mount is seen from the test\'s namespace')
  t.equal((await first.stop()).exitCode, 0)
  const got = await run('nsenter', [`--mount=/proc/${second.child.pid}/ns/mnt`, 'cat', path.join(mnt, 'libfoo.so.1.2.3')], { encoding: 'buffer' })
  t.ok(got.stdout.equals(await readFile(path.join(j.libs, 'libfoo.so.1.2.3'))), 'the second node still reads its libraries after the first left')
  t.equal((await second.stop()).exitCode, 0)
  await t.rejects(stat(mnt), { code: 'ENOENT' }, 'the last node to leave removed the mount point')
  await t.rejects(stat(path.dirname(mnt)), { code: 'ENOENT' }, 'and the parent directory it made')
  t.ok((await stat(j.dir)).isDirectory(), 'but nothing it did not make')
})

t.test('unmounted from outside, the agent ends', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const native = await nativeAgent(j, path.join(j.dir, 'mnt'), 'native')
  await run('fusermount3', ['-u', native.mountPoint])
  const r = await native.child
  t.equal(r.exitCode, 0, 'it exited by itself, with success')
  t.equal(await isMounted(native.mountPoint), false)
})

t.test('node-agent hands a spec it does not serve to the Node agent, by exec, with the same arguments', async (t) => {
  const { encodeJob, JOB_SPEC_VERSION } = await import('../lib/session/job-spec.ts')
  const spec = { version: JOB_SPEC_VERSION, node: { agent: 'native', runDir: '/tmp/p2prun-nothing' }, taskEnv: [], description: 'AAAA', infoHash: 'a'.repeat(40) }
  const cases: Array<[string, string | undefined]> = [
    ['no spec', undefined],
    ['a spec that is not base64url JSON', 'not a spec!'],
    ['another version', encodeJob({ ...spec, version: JOB_SPEC_VERSION + 1 } as never)],
    ['the Node agent chosen', encodeJob({ ...spec, node: { ...spec.node, agent: 'node' } } as never)],
    ['no description in the spec', encodeJob({ ...spec, description: undefined } as never)],
    ['a description that does not inflate', encodeJob({ ...spec, mountPoint: '/m', trackers: [], seeders: [], node: { ...spec.node, mode: 'eager', storeDir: '/tmp', fuseDevice: '/dev/fuse', maxConns: 5, numwant: 5, stallTimeoutMs: 1000 } } as never)]
  ]
  for (const [name, raw] of cases) {
    const r = await execa(NATIVE_AGENT, ['node-agent', '--node', 'n1', '--launch-id', 'l1', '--expect', '3', '--until-stopped', '--', '/bin/echo', 'p2prun'],
      { env: cleanEnv(raw === undefined ? {} : { P2PRUN_JOB: raw }), extendEnv: false, reject: false, stdin: 'ignore' })
    t.same([r.exitCode, r.stdout, r.stderr], [0, 'p2prun node-agent --node n1 --launch-id l1 --expect 3 --until-stopped', ''], name)
  }
})

/**
 * A launch's spec without the description, for `p2prun-agent node-agent` on nodes of `j` (served by
 * `head`), and a way to start that node agent as a rank would (its node state's ranks/ made first).
 */
async function specWithoutDescription (j: Job, head: Serving, seeders: readonly string[], secret?: string) {
  const { encodeJob, JOB_SPEC_VERSION } = await import('../lib/session/job-spec.ts')
  const infoHash = parseDescription(await readFile(j.file)).infoHash
  const runDir = path.join(j.dir, 'run')
  const spec = {
    version: JOB_SPEC_VERSION, launchId: 'l1', infoHash, descriptionUrl: head.tracker.replace(/\/announce$/, `/p2prun/${infoHash}.torrent`),
    trackers: [head.tracker], seeders, mountPoint: path.join(j.dir, 'mnt-%n'), libDirs: [''], taskEnv: [], ...(secret ? { secret } : {}),
    node: { agent: 'native', mode: 'eager', storeDir: j.dir, runDir, fuseDevice: '/dev/fuse', maxConns: 8, numwant: 8, stallTimeoutMs: 5000 }
  }
  const nodeAgent = async (node: string, job: object) => {
    await mkdir(path.join(runDir, `job-l1-${node}`, 'ranks'), { recursive: true })
    const child = execa(NATIVE_AGENT, ['node-agent', '--node', node, '--launch-id', 'l1', '--until-stopped', '--', '/bin/false'],
      { env: cleanEnv({ P2PRUN_JOB: encodeJob(job as never), P2PRUN_DEBUG: '2' }), extendEnv: false, reject: false, stdin: 'ignore' })
    j.defer(async () => { child.kill('SIGTERM'); await child; await ensureUnmounted(path.join(j.dir, `mnt-${node}`)) })
    return { child } // a promise of the child itself would be awaited into its result
  }
  return { spec, infoHash, runDir, nodeAgent }
}

t.test('node-agent without the description in the spec: from the head over HTTP (an open job); a head not there is the node\'s failure, one line and a record', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const { spec, infoHash, runDir, nodeAgent } = await specWithoutDescription(j, j.head, [j.head.seeder])
  const { child: served } = await nodeAgent('n1', spec)
  await waitForLine(served, /^mounted infohash=/)
  t.same(await snapshotTree(path.join(j.dir, 'mnt-n1'), 0o555), await snapshotTree(j.libs, 0o555), 'the set, mounted')
  served.kill('SIGTERM')
  const r = await served
  t.equal(r.exitCode, 0, String(r.stderr))
  t.match(String(r.stderr), /description: from the head\n[^]*agent: native, no Node process\n/, 'the description from the head, no Node process')

  const unreachable = { ...spec, descriptionUrl: `http://127.0.0.1:${(await freePorts(1))[0]}/p2prun/${infoHash}.torrent` }
  const failed = await (await nodeAgent('n2', unreachable)).child
  t.equal(failed.exitCode, 1)
  t.match(String(failed.stderr), /^p2prun-agent: node n2 cannot get the description from http:\/\/127\.0\.0\.1:\d+\/p2prun\/\w+\.torrent: cannot connect: Connection refused \(hint: [^\n]+\)$/, 'one line with a hint')
  const record = JSON.parse(await readFile(path.join(runDir, 'job-l1-n2', 'failed.json'), 'utf8')) as { code: string, message: string }
  t.same([record.code, record.message.startsWith('node n2 cannot get the description')], ['LAUNCH', true], 'the node\'s failure record, for its ranks')
  t.equal(await isMounted(path.join(j.dir, 'mnt-n2')), false, 'no mount')
  await t.rejects(stat(path.join(j.dir, 'mnt-n2')), { code: 'ENOENT' }, 'no mount point')

  // The head by name: resolved where the dial is (RFC 6761 keeps .invalid from resolving anywhere).
  // A machine may lack the name localhost (a minimal chroot without /etc/hosts).
  if ((await lookup('localhost', { family: 4 }).catch(() => undefined))?.address === '127.0.0.1') {
    const byName = { ...spec, descriptionUrl: spec.descriptionUrl.replace('//127.0.0.1:', '//localhost:') }
    t.not(byName.descriptionUrl, spec.descriptionUrl, 'the URL names the head')
    const { child: named } = await nodeAgent('n3', byName)
    await waitForLine(named, /^mounted infohash=/)
    named.kill('SIGTERM')
    t.equal((await named).exitCode, 0, 'the head named localhost: mounted')
  } else t.comment('localhost does not resolve to 127.0.0.1 here: the head by name not tried')
  const unresolved = await (await nodeAgent('n4', { ...spec, descriptionUrl: `http://no-such-head.invalid:1/p2prun/${infoHash}.torrent` })).child
  t.equal(unresolved.exitCode, 1)
  t.match(String(unresolved.stderr), /^p2prun-agent: node n4 cannot get the description from http:\/\/no-such-head\.invalid:1\/\S+: no address for the name no-such-head\.invalid \(hint: [^\n]+\)$/, 'a name that does not resolve, said so')
  t.equal(await isMounted(path.join(j.dir, 'mnt-n4')), false, 'no mount')
})

t.test('node-agent of a launch by node list: its place in the hostlist, the peers node-list.ts picks for it dialed, the head held', async (t) => {
  const { listedPeers, dialsHead } = await import('../lib/swarm/node-list.ts')
  const { expandHostlist } = await import('../lib/session/launch-nodes.ts')
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const { spec, infoHash, nodeAgent } = await specWithoutDescription(j, j.head, [j.head.seeder])
  // [hostlist, this node's name, its place]: by its name; by its short name, among ranges of two
  // levels, lists and plain names (launch-nodes.ts's expandHostlist and placeOf decide the place).
  const cases = [['n[00-39]', 'n05', 5], ['a1,r[1-2]n[01-02],n[08-10,12],gpu3', 'n10.cluster', 7]] as const
  for (const [names, node, place] of cases) {
    t.equal(expandHostlist(names).indexOf(node.split('.')[0] as string), place, `${node} is place ${place} of ${names}`)
    const count = expandHostlist(names).length
    // The others are not up; this node listens at port base + place. The whole run free: a port of
    // it that something listens on (the head's, once) is no failed dial, and the wait below hung.
    const base = await freePortRange(count)
    const own = base + place
    // Block mode: nothing waits unless read, so a node that does not dial the head holds it. Room for all its peers.
    const byList = { ...spec, trackers: [], nodeList: { host: '127.0.0.1', port: base, names }, node: { ...spec.node, mode: 'block', maxConns: 100 } }
    const { child } = await nodeAgent(node, byList)
    let log = ''
    child.stderr?.on('data', (chunk: Buffer) => { log += chunk.toString() })
    await waitForLine(child, /^mounted infohash=/)
    const expected = listedPeers(count, place, Buffer.from(infoHash, 'hex')).map((k) => base + k).sort((a, b) => a - b)
    const dialed = () => [...new Set([...log.matchAll(/127\.0\.0\.1:(\d+) \(setting up\): closed/g)].map((m) => Number(m[1])))].sort((a, b) => a - b)
    const seeder = new RegExp(`${j.head.seeder.replace(/\./g, '\\.')}: open`)
    // Every listed peer dialed, and the head too where this node is one that dials it at start.
    await new Promise<void>((resolve) => {
      const check = () => {
        if (expected.every((p) => dialed().includes(p)) && (!dialsHead(count, place) || seeder.test(log))) { child.stderr?.off('data', check); resolve() }
      }
      child.stderr?.on('data', check)
      check()
    })
    t.same(dialed(), expected, `${node}: it dialed node-list.ts's ${expected.length} peers for place ${place} of ${count}, and only those`)
    if (dialsHead(count, place)) t.match(log, seeder, `${node}: one that dials the head at start`)
    else t.notMatch(log, seeder, `${node}: not one that dials the head, and no read waited: the head held`)
    child.kill('SIGTERM')
    const r = await child
    t.equal(r.exitCode, 0, `${node}: stopped`)
    t.match(String(r.stderr), new RegExp(`peers: from the node list \\(${count} nodes; this is 127\\.0\\.0\\.1:${own}\\)\n[^]*agent: native, no Node process`), `${node}: its place, and no Node process`)
  }
})

t.test('node-agent fetching the description past hostile seeders of the job: a wrong proof, a wrong size, an endless message, bytes not a description', async (t) => {
  const { j, secret, head, infoHash } = await jobWithSecret(t)
  const behaviours = ['wrong proof', 'wrong total size', 'endless message', 'not a description'] as const
  const met: string[] = []
  const hostile = await Promise.all(behaviours.map((behaviour) => new Promise<string>((resolve) => {
    const server = net.createServer((socket) => {
      met.push(behaviour)
      socket.on('error', () => {})
      const id = Buffer.from(`-P2N020-${randomBytes(6).toString('hex')}`)
      let buffered = Buffer.alloc(0)
      socket.on('data', (chunk: Buffer) => {
        const first = buffered.length < 68
        buffered = Buffer.concat([buffered, chunk])
        if (!first || buffered.length < 68) return
        // As a member of the job would (it knows the secret), but for the one thing it gets wrong.
        const theirs = buffered.subarray(48, 68)
        const auth = behaviour === 'wrong proof' ? randomBytes(32)
          : peerProof(secret, infoHash, id, theirs)
        const size = 20_000 // two pieces of the description
        const ext = Buffer.concat([Buffer.from([0]), Buffer.from('d1:md11:p2prun_desci3ee11:p2prun_auth32:'), auth, Buffer.from(`16:p2prun_desc_sizei${size}ee`)])
        const data = (piece: number, total: number, bytes: Buffer) => message(20, Buffer.concat([Buffer.from([2]), Buffer.from(`d8:msg_typei1e5:piecei${piece}e10:total_sizei${total}ee`), bytes]))
        const answer = behaviour === 'wrong total size' ? data(0, size + 1, randomBytes(16384))
          : behaviour === 'endless message' ? u32(0xfffffff0)
            : Buffer.concat([data(0, size, randomBytes(16384)), data(1, size, randomBytes(size - 16384))])
        socket.write(Buffer.concat([handshake(infoHash, { extensions: true, peerId: id }), message(20, ext), answer]))
      })
    })
    j.defer(() => new Promise<void>((done) => server.close(() => done())))
    server.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(server.address() as net.AddressInfo).port}`))
  })))
  // The hostile ones first (seeders are asked in their order), then the head's seeder, which has it.
  const { spec, nodeAgent } = await specWithoutDescription(j, head, [...hostile, head.seeder], secret)
  const { child } = await nodeAgent('n1', spec)
  await waitForLine(child, /^mounted infohash=/)
  t.same(await snapshotTree(path.join(j.dir, 'mnt-n1'), 0o555), await snapshotTree(j.libs, 0o555), 'the set, mounted')
  child.kill('SIGTERM')
  const r = await child
  t.equal(r.exitCode, 0, String(r.stderr))
  t.match(String(r.stderr), /description: from a peer\n/, 'from a peer: the head\'s seeder')
  t.same([...new Set(met)].sort(), [...behaviours].sort(), 'every hostile seeder was asked, and none took the agent down')
})

t.test('the remote file systems a store may not live on are the Node agent\'s (lib/file-systems.ts)', async (t) => {
  const source = await readFile(path.join(ROOT, 'native/agent/main.c'), 'utf8')
  const listed = [...source.matchAll(/\{ (0x[0-9a-f]+), "([^"]+)" \}/g)].map((m) => [Number(m[1]), m[2]])
  t.same(listed, [...REMOTE_FS_TYPES], 'the same types and names, in the same order')
})

t.test('bad input: one line with a hint, exit 2, and nothing left behind', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  const notTorrent = path.join(j.dir, 'not.torrent')
  await writeFile(notTorrent, 'd3:fooi1ee')
  const escaping = path.join(j.dir, 'escaping.p2p.torrent')
  await writeFile(escaping, withSymlinks(await readFile(j.file), { 'libevil.so': '../../etc/passwd' }))
  const full = path.join(j.dir, 'full')
  await mkdir(full)
  await writeFile(path.join(full, 'something'), 'x')
  const mnt = path.join(j.dir, 'mnt')
  // A FUSE mount, as a store directory on a file system with a server behind every call.
  const remote = await nativeAgent(j, path.join(j.dir, 'remote'), 'remote')
  const cases: Array<[string, string[], Record<string, string>, RegExp]> = [
    ['no command', [], {}, /expected a command/],
    ['an unknown option', ['mount', j.file, mnt, '--frobnicate'], {}, /unknown or incomplete option '--frobnicate'/],
    ['a mode that is none', ['mount', j.file, mnt, '--mode', 'lazy'], {}, /--mode takes eager, block or file, not 'lazy'/],
    ['a negative --max-conns', ['mount', j.file, mnt, '--max-conns', '-1'], {}, /--max-conns takes a number of connections from 1 to 120/],
    ['a --peer that is not host:port', ['mount', j.file, mnt, '--peer', 'node7'], {}, /--peer takes HOST:PORT, not 'node7'/],
    ['--no-trackers with a tracker', ['mount', j.file, mnt, '--no-trackers', '--tracker', j.head.tracker], {}, /--no-trackers and --tracker exclude each other/],
    ['a --head-fallback that is not seconds', ['mount', j.file, mnt, '--head-fallback', 'soon'], {}, /--head-fallback takes seconds/],
    ['a source that is not absolute', ['mount', j.file, mnt, '--source', 'libs'], {}, /--source takes an absolute directory, not 'libs'/],
    ['no description', ['mount', path.join(j.dir, 'nothere.p2p.torrent'), mnt], {}, /cannot read description/],
    ['a torrent that is not a description', ['mount', notTorrent, mnt], {}, /not a torrent file|no info dictionary/],
    ['a link out of the set', ['mount', escaping, mnt], {}, /libevil\.so.*outside the set: its target climbs above the top directory/],
    ['a mount point in use', ['mount', j.file, full], {}, /is not empty/],
    ['a secret that is not one', ['mount', j.file, mnt], { P2PRUN_SECRET: 'xyz' }, /P2PRUN_SECRET is not a job secret/],
    ['a store directory that is not there', ['mount', j.file, mnt, '--store-dir', path.join(j.dir, 'nothere')], {}, /cannot make a store/],
    ['a store directory on a remote file system', ['mount', j.file, mnt, '--store-dir', remote.mountPoint], {},
      /the store directory \S+ is on FUSE: the node agent reads and writes its store without waiting/],
    ['node-agent without the p2prun command', ['node-agent', '--node', 'n', '--launch-id', 'l'], {}, /node-agent needs --node, --launch-id and, after --, the p2prun command/],
    ['node-agent with an unknown option', ['node-agent', '--node', 'n', '--launch-id', 'l', '--expect', 'x', '--', '/bin/echo'], {}, /node-agent: unknown or incomplete option '--expect'/]
  ]
  for (const [name, args, env, why] of cases) {
    const r = await execa(NATIVE_AGENT, args, { env: cleanEnv(env), extendEnv: false, reject: false, stdin: 'ignore' })
    t.equal(r.exitCode, 2, `${name}: exit 2`)
    t.match(r.stderr, why, name)
    t.match(r.stderr, /^p2prun-agent: [^\n]+ \(hint: [^\n]+\)$/, `${name}: one line with a hint`)
    await t.rejects(stat(mnt), { code: 'ENOENT' }, `${name}: no mount point made`)
  }
  t.same(await readdir(full), ['something'], 'the full directory untouched')
  const version = await execa(NATIVE_AGENT, ['--version'], { reject: false })
  t.same([version.exitCode, version.stdout], [0, JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')).version], '--version: p2prun\'s')
  const help = await execa(NATIVE_AGENT, ['--help'], { reject: false })
  t.match(help, { exitCode: 0, stdout: /^usage: p2prun-agent mount DESCRIPTION\|- MOUNTPOINT / }, '--help: the usage, on stdout')
  t.same((await readdir(j.dir)).filter((n) => n.startsWith('p2prun-')), [], 'no store left')
})

t.test('a set complete before the tracker answered the started announce, and the agent stopped at once: the tracker hears completed, then stopped', async (t) => {
  const j = await job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))
  // A tracker that holds its answer to `started` until the test lets it go.
  const events: string[] = []
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  const tracker = http.createServer((req, res) => {
    const event = new URL(req.url ?? '/', 'http://x').searchParams.get('event') ?? 'none'
    events.push(event)
    const answer = () => res.end('d8:intervali60e5:peers0:e')
    if (event === 'started') void held.then(answer)
    else answer()
  })
  j.defer(() => { release(); return new Promise<void>((resolve) => { tracker.closeAllConnections(); tracker.close(() => resolve()) }) })
  await new Promise<void>((resolve) => tracker.listen(0, '127.0.0.1', () => resolve()))
  const url = `http://127.0.0.1:${(tracker.address() as net.AddressInfo).port}/announce`
  const agent = await mountAgent(j, j.file, path.join(j.dir, 'mnt'), path.join(j.dir, 'agent.json'),
    ['--mode', 'eager', '--tracker', url, '--seeder', j.head.seeder, '--store-dir', j.dir], { P2PRUN_DEBUG: '1' }, [], NATIVE_AGENT)
  for (let stats = await nativeStats(agent); stats.swarm.piecesHave < stats.swarm.pieceCount; stats = await nativeStats(agent)) {
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  t.same(events, ['started'], 'the set is complete while the started announce waits')
  const stopping = agent.stop()
  await stderrLine(agent, /stopping/) // the stop asked for while the started announce still waits
  release()
  t.equal((await stopping).exitCode, 0)
  t.same(events, ['started', 'completed', 'stopped'], 'the completion is told before the stop, not replaced by it')
})
