// Which agent serves a mount (the `agent` setting: lib/agent.ts's agentKind): `p2prun mount`, its
// --daemon and a launch's node agents hand eager mounts to the native agent (dist/p2prun-agent)
// and keep the Node one for the rest; and what the native agent does for them: its counters, its
// end with its parent, the fallback to the source. Real FUSE mounts and a real head on loopback.
import { execFile } from 'node:child_process'
import { access, readdir, readFile, readlink, writeFile } from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import { execa } from 'execa'
import t from 'tap'
import { isMounted } from '../lib/mount.ts'
import { isAlive } from '../lib/session/process.ts'
import { bytesFor, LIBRARY_TREE, makeTree } from './helpers/fixtures.ts'
import { cleanEnv, NATIVE_AGENT, p2prun, ROOT, waitForLine } from './helpers/cli.ts'
import { agentStats, ensureUnmounted, job, mountAgent, nodeArgs } from './helpers/mount.ts'
import { launch, launchDirs, nothingLeft } from './helpers/launch.ts'
import { scratch } from './helpers/scratch.ts'

const run = promisify(execFile)
const libraryJob = (t: Parameters<typeof job>[0]) => job(t, (dir) => makeTree(path.join(dir, 'libs'), LIBRARY_TREE))

/** The programs of `pid`'s children, by pid. */
async function children (pid: number): Promise<Map<number, string>> {
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')
  const out = new Map<number, string>()
  for (const child of text.split(' ').filter((w) => w !== '').map(Number)) out.set(child, await readlink(`/proc/${child}/exe`).catch(() => '?'))
  return out
}

/** Resolves once `pid` is gone: each check follows the last, no timing. */
async function gone (pid: number): Promise<void> {
  for (let i = 0; i < 2000 && await isAlive(pid); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  if (await isAlive(pid)) throw new Error(`process ${pid} is still there`)
}

/** A loopback port nothing listens on (it was free a moment ago). */
async function closedPort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('p2prun mount: every mode from a tracker goes to the native agent; a kept store and --agent node to the Node one', async (t) => {
  const j = await libraryJob(t)
  const eager = await mountAgent(j, j.file, path.join(j.dir, 'eager'), path.join(j.dir, 'eager.json'), nodeArgs(j, 'eager'))
  const pid = eager.child.pid as number
  t.same([...(await children(pid)).values()], [NATIVE_AGENT], 'eager: the command\'s one child is the native agent')
  t.equal(await readFile(path.join(eager.mountPoint, 'share/README'), 'utf8'), 'library set for tests\n')
  const asked = await agentStats(eager) as unknown as { infoHash: string, swarm: { fromHead: number }, cpu: { user: number } }
  t.match(asked, { infoHash: /^[0-9a-f]{40}$/, swarm: { fromHead: Number }, cpu: { user: Number } }, 'SIGUSR1: the native agent\'s counters, through the command')
  const { stats, exitCode } = await eager.stop()
  t.equal(exitCode, 0)
  t.ok(stats.swarm.fromHead > 0 && stats.fs.ops.read > 0, `--stats: ${stats.swarm.fromHead} bytes from the head, ${stats.fs.ops.read} reads`)

  // A node list's peers are the native agent's flags (lib/native-agent.ts): the list reads as a tracker would.
  const list = path.join(j.dir, 'nodes')
  await writeFile(list, `127.0.0.1:${await closedPort()}\n127.0.0.1:${await closedPort()}\n`)
  const byList = ['--mode', 'block', '--seeder', j.head.seeder, '--store-dir', j.dir, '--node-list', list, '--node-index', '0']
  for (const [name, args, native] of [['block mode', nodeArgs(j, 'block'), true], ['file mode', nodeArgs(j, 'file'), true], ['a node list', byList, true],
    ['block mode, --agent native', [...nodeArgs(j, 'block'), '--agent', 'native'], true], ['a store kept', [...nodeArgs(j, 'eager'), '--keep-store'], false],
    ['--agent node', [...nodeArgs(j, 'eager'), '--agent', 'node'], false]] as const) {
    const agent = await mountAgent(j, j.file, path.join(j.dir, name.replace(/\W/g, '')), path.join(j.dir, 'other.json'), args)
    const programs = [...(await children(agent.child.pid as number)).values()]
    t.same(programs.filter((exe) => exe === NATIVE_AGENT).length, native ? 1 : 0, `${name}: ${native ? 'the native agent' : 'no native agent'}`)
    t.same(await readFile(path.join(agent.mountPoint, 'libbar.so.2.0')), bytesFor('libbar.so.2.0', 150_001), `${name}: served`)
    const { stats } = await agent.stop()
    if (name === 'block mode') t.ok(stats.swarm.fromHead < 300_000, `block mode fetched what was read (${stats.swarm.fromHead} bytes), not the set`)
    if (name === 'file mode') t.ok(stats.fs.readsForwarded === 0, 'file mode: the open waited for the whole file, no read did')
  }
})

t.test('--agent native with what it does not do: one line with a hint, exit 2, nothing left', async (t) => {
  const j = await libraryJob(t)
  const mnt = path.join(j.dir, 'mnt')
  for (const [name, args] of [['a DHT', [...nodeArgs(j, 'eager'), '--dht', '127.0.0.1:9', '--agent', 'native']], ['a store kept', [...nodeArgs(j, 'eager'), '--keep-store']]] as const) {
    const r = await p2prun(['mount', j.file, mnt, ...args], { env: name === 'a store kept' ? { P2PRUN_AGENT: 'native' } : {} })
    t.equal(r.exitCode, 2, `${name}: exit 2`)
    t.match(r.stderr, /^p2prun mount: error: the native agent does not do .* \(hint: set agent to auto or node \(--agent, P2PRUN_AGENT\)\)$/, `${name}: one line`)
    await t.rejects(access(mnt), `${name}: no mount point made`)
  }
  t.same((await readdir(j.dir)).filter((n) => n.startsWith('p2prun-')), [], 'no store')
})

t.test('a Node process killed with SIGKILL takes its native agent with it: the mount goes, umount clears the record', async (t) => {
  const j = await libraryJob(t)
  const mnt = path.join(j.dir, 'mnt')
  const runDir = path.join(j.dir, 'run')
  const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), [...nodeArgs(j, 'eager'), '--run-dir', runDir])
  const [native] = [...(await children(agent.child.pid as number)).keys()]
  t.ok(native, 'the native agent runs')
  agent.child.kill('SIGKILL')
  await agent.child
  await gone(native as number)
  t.equal(await isMounted(mnt), false, 'it unmounted')
  await t.rejects(access(mnt), 'and removed the mount point it made')
  const r = await p2prun(['umount', mnt, '--run-dir', runDir])
  t.equal(r.exitCode, 0, r.stderr)
  t.same(await readdir(runDir), [], 'no record left')
})

t.test('--daemon with the native agent: no Node process stays; umount stops it and leaves nothing', async (t) => {
  const j = await libraryJob(t)
  const mnt = path.join(j.dir, 'mnt')
  const runDir = path.join(j.dir, 'run')
  const ready = path.join(j.dir, 'ready.json')
  j.defer(() => ensureUnmounted(mnt))
  const r = await p2prun(['mount', j.file, mnt, ...nodeArgs(j, 'eager'), '--daemon', '--run-dir', runDir, '--ready-file', ready])
  t.equal(r.exitCode, 0, r.stderr)
  const { pid, mountPoint } = JSON.parse(await readFile(ready, 'utf8')) as { pid: number, mountPoint: string }
  j.defer(async () => { if (await isAlive(pid)) process.kill(pid, 'SIGTERM') })
  t.equal(mountPoint, mnt)
  t.equal(await readlink(`/proc/${pid}/exe`), NATIVE_AGENT, 'the ready file names the native agent, which serves alone')
  const { stdout } = await run('cat', [path.join(mnt, 'share/README')])
  t.equal(stdout, 'library set for tests\n')
  const stop = await p2prun(['umount', mnt, '--run-dir', runDir])
  t.equal(stop.exitCode, 0, stop.stderr)
  t.equal(await isMounted(mnt), false, 'unmounted')
  await t.rejects(access(ready), 'the ready file removed')
  t.same(await readdir(runDir), [], 'no record or log left')

  const failing = await p2prun(['mount', j.file, mnt, ...nodeArgs(j, 'eager'), '--daemon', '--run-dir', runDir, '--fuse-device', '/nonexistent'])
  t.same([failing.exitCode, failing.stderr.trim().split('\n').length], [1, 1], 'a daemon that cannot mount: exit 1, one line')
  t.match(failing.stderr, /^p2prun mount: error: FUSE is not available: \/nonexistent is missing/)
})

t.test('the native agent reads what a stalled read waits for from the source directory, checked; without one, EIO saying both', async (t) => {
  const s = await scratch(t)
  const libs = await makeTree(path.join(s.dir, 'libs'), LIBRARY_TREE)
  const file = path.join(s.dir, 'set.p2p.torrent')
  t.equal((await p2prun(['describe', libs, '-o', file])).exitCode, 0)
  // No head anywhere: nothing can arrive, so every read stalls.
  const nowhere = ['--tracker', `http://127.0.0.1:${await closedPort()}/announce`, '--seeder', `127.0.0.1:${await closedPort()}`, '--store-dir', s.dir, '--stall-timeout', '1']
  const start = async (name: string, source: string) => {
    const mnt = path.join(s.dir, name)
    const child = execa(NATIVE_AGENT, ['mount', file, mnt, ...nowhere, '--source', source], { env: cleanEnv(), extendEnv: false, reject: false, stdin: 'ignore' })
    s.defer(async () => { child.kill('SIGTERM'); await child; await ensureUnmounted(mnt) })
    await waitForLine(child, /^mounted infohash=/)
    return { mnt, child }
  }
  const lucky = await start('lucky', libs)
  const unlucky = await start('unlucky', path.join(s.dir, 'not-mounted-here'))
  t.same(await readFile(path.join(lucky.mnt, 'libbar.so.2.0')), bytesFor('libbar.so.2.0', 150_001), 'the right bytes, from the source')
  t.equal(await readFile(path.join(lucky.mnt, 'share/README'), 'utf8'), 'library set for tests\n', 'a second stalled read too')
  await t.rejects(readFile(path.join(unlucky.mnt, 'libbar.so.2.0')), { code: 'EIO' }, 'no source to read: EIO')
  lucky.child.kill('SIGUSR1')
  const counters = JSON.parse((await waitForLine(lucky.child, /^\{.*\}$/))[0]) as { swarm: { fromSource: number, fromHead: number } }
  t.ok(counters.swarm.fromSource >= 150_001 && counters.swarm.fromHead === 0, `${counters.swarm.fromSource} bytes from the source, none from a head`)
  lucky.child.kill('SIGTERM')
  unlucky.child.kill('SIGTERM')
  const [l, u] = [await lucky.child, await unlucky.child]
  t.equal(String(l.stderr).match(/the swarm stalled for 1 s: reading what programs wait for from the source directory instead/g)?.length, 1, 'said once')
  // An open that waits for the whole file (the kernel reads it from the store itself, as root) or a read.
  t.match(String(u.stderr), /(?:open|read) \/libbar\.so\.2\.0 failed: no data arrived for 1 s \(0 peers connected\): .*, and the source directory cannot stand in: .*not-mounted-here.* \(hint: /, 'saying both')
})

t.test('a launch\'s node agents: the native node agent alone, with the description in the spec or from the head, in eager or block mode; and with a node list; Node alone with a DHT', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const app = path.join(s.dir, 'hello')
  await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', app])
  // The rank names the program of its node's agent (ready.json's pid) and of that agent's children.
  const whoServes = path.join(s.dir, 'who-serves')
  await writeFile(whoServes, `#!/bin/sh\nfor f in "${dirs.run}"/job-*/ready.json; do pid=$(sed -n 's/.*"pid":\\([0-9]*\\).*/\\1/p' "$f")\n` +
    'echo "agent $(readlink /proc/$pid/exe) children $(for c in $(cat /proc/$pid/task/$pid/children); do readlink /proc/$c/exe; done)"; done\n', { mode: 0o755 })
  const node = process.execPath
  const args = ['-n', '1', '--launcher', 'local', '--libs', path.join(app, 'libs')]
  const cases = [
    ['eager, the description in the spec', [], {}, 'native, no Node process', `agent ${NATIVE_AGENT} children`],
    ['eager, the description from peers', [], { P2PRUN_DESCRIPTION_ROUTE: 'peers' }, 'native, no Node process', `agent ${NATIVE_AGENT} children`],
    ['block mode', ['--mode', 'block'], {}, 'native, no Node process', `agent ${NATIVE_AGENT} children`],
    ['a DHT', ['--discovery', 'dht'], {}, 'node', `agent ${node} children`],
    ['a node list', ['--discovery', 'nodes', '--node-host', '127.0.0.1', '--node-port', String(await closedPort())], {}, 'native, no Node process', `agent ${NATIVE_AGENT} children`]
  ] as const
  for (const [name, extra, env, kind, served] of cases) {
    const r = await launch(s, dirs, [...args, ...extra, whoServes], { P2PRUN_DEBUG: '2', ...env })
    t.equal(r.exitCode, 0, String(r.stderr))
    t.equal(r.stdout.trimEnd(), served, `${name}: ${served}`)
    const [log] = await readdir(path.join(dirs.run, 'logs'))
    t.match(await readFile(path.join(dirs.run, 'logs', log as string), 'utf8'), new RegExp(` agent: ${kind}\n`), `${name}: the ${kind} agent`)
    await execa('rm', ['-r', path.join(dirs.run, 'logs')])
    await nothingLeft(t, s, dirs)
  }
  const refused = await launch(s, dirs, [...args, '--discovery', 'dht', '--agent', 'native', whoServes])
  t.equal(refused.exitCode, 2, 'a usage error')
  t.match(String(refused.stderr), /the native agent does not do the DHT/)
  t.equal(String(refused.stderr).trim().split('\n').length, 1, 'one line')
  await nothingLeft(t, s, dirs)
})
