// Node agents that linger (agent-linger): the node's next launch is handed to the agent of the last
// one, by the native rank step and by the Node one; it leaves when its time is up, or on SIGTERM,
// and leaves nothing; a dead agent's socket is replaced; what is not a hand-off is refused, and
// the agent goes on.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { readWarmAgentRecord, warmAgentFiles } from '../lib/session/node-state.ts'
import { isAlive, terminate } from '../lib/session/process.ts'
import { NodeState } from '../lib/session/node-state.ts'
import { decodeHandoff, encodeHandoff, HANDOFF_MAGIC, handToWarmAgent } from '../lib/session/warm-agent.ts'
import { ROOT, waitForLine } from './helpers/cli.ts'
import { launch, launchDirs, nothingLeft, type LaunchDirs } from './helpers/launch.ts'
import { scratch, type Scratch } from './helpers/scratch.ts'

const run = promisify(execFile)

async function example (t: Test) {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const app = path.join(s.dir, 'hello')
  await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', app])
  // Bytes enough that what the head sends tells a fetched set from a kept one.
  await writeFile(path.join(app, 'libs/libdata.so'), randomBytes(4_000_000))
  // Stops whatever agent still lingers when the test ends, failed or not (before the mounts go).
  s.defer(async () => {
    for (const node of ['alpha', ...(await hostRanks())]) {
      const record = await readWarmAgentRecord(warmAgentFiles(dirs.run, node).record)
      if (record) await terminate(record.pid, 10_000)
    }
  })
  return { s, dirs, app: path.join(app, 'app'), libs: path.join(app, 'libs') }
}

/** The names P2PRUN_NODE_PER_RANK gives two ranks on this host. */
async function hostRanks (): Promise<string[]> {
  const host = (await readFile('/proc/sys/kernel/hostname', 'utf8')).trim()
  return [`${host}-rank0`, `${host}-rank1`]
}

/** Each rank prints the pid of the agent that serves its node (its ready.json), reads the set, then runs the program. */
function launchShowingAgent (s: Scratch, dirs: LaunchDirs, libs: string, app: string, env: Record<string, string>) {
  // One write per line: the two ranks print at once. Every file is read, so the node has the whole
  // set when the launch ends (a launch ends with its ranks, fetched or not).
  const script = `for f in "$P2PRUN_RUN_DIR"/job-*-$NODE/ready.json; do echo "agent $(sed 's/.*"pid":\\([0-9]*\\).*/\\1/' "$f")"; done; ` +
    `cat "$P2PRUN_MOUNT"/* > /dev/null; exec ${app}`
  return launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', libs, '--stats', 'sh', '-c', script], env)
}

/** What the launch's summary says the head sent, in sets. */
const headSent = (stderr: unknown) => Number(String(stderr).match(/head sent .* = ([\d.]+)x the/)?.[1])

/** One node, alpha, whose agent lingers long enough for any test. */
const ALPHA = { P2PRUN_NODE_NAME: 'alpha', NODE: 'alpha', P2PRUN_AGENT_LINGER: '300' }

/** The example, and a first launch with `env`, whose agents then linger. */
async function firstLaunch (t: Test, env: Record<string, string>) {
  const ex = await example(t)
  const first = await launchShowingAgent(ex.s, ex.dirs, ex.libs, ex.app, env)
  t.equal(first.exitCode, 0, String(first.stderr))
  return { ...ex, env, first, agents: agentsOf(first.stdout) }
}

const agentsOf = (stdout: string) => new Set([...stdout.matchAll(/^agent (\d+)$/gm)].map((m) => Number(m[1])))

t.test('the native rank step hands the next launch to the lingering agent; SIGTERM ends it and nothing is left', async (t) => {
  const { s, dirs, app, libs, env, first, agents: [agent] } = await firstLaunch(t, ALPHA)
  t.equal(first.stdout.match(/hello, world, from libgreet/g)?.length, 2, 'both ranks ran')
  const files = warmAgentFiles(dirs.run, 'alpha')
  t.match(await readWarmAgentRecord(files.record), { pid: agent, socket: files.socket, store: String }, 'the agent lingers, and says where, and which store it keeps')
  t.ok(agent && await isAlive(agent), 'its process runs')

  t.ok(headSent(first.stderr) >= 1, `the head sent the set once (${headSent(first.stderr)}x)`)
  t.equal((await readdir(s.dir)).filter((n) => n.startsWith('p2prun-')).length, 1, 'its store is kept')

  const second = await launchShowingAgent(s, dirs, libs, app, env)
  t.equal(second.exitCode, 0, String(second.stderr))
  t.equal(second.stdout.match(/hello, world, from libgreet/g)?.length, 2, 'both ranks of the next launch ran')
  t.same([...agentsOf(second.stdout)], [agent], 'served by the same agent: no new one started')
  t.match(second.stdout, /^rank 0 lib \S+\/mnt\/\w+-alpha\/libgreet\.so\.1$/m, 'from the mount')
  t.ok(headSent(second.stderr) < 0.05, `the same set again: from the kept store, the head sent ${headSent(second.stderr)}x`)

  t.ok(await terminate(agent as number, 10_000), 'SIGTERM ends it')
  await nothingLeft(t, s, dirs)
})

t.test('the Node rank step (a node per rank) hands over too; the agents leave when their time is up', async (t) => {
  const { s, dirs, app, libs, env, agents } = await firstLaunch(t, { P2PRUN_NODE_PER_RANK: '1', NODE: '*', P2PRUN_AGENT_LINGER: '2' })
  t.equal(agents.size, 2, 'one agent per emulated node')
  const second = await launchShowingAgent(s, dirs, libs, app, env)
  t.equal(second.exitCode, 0, String(second.stderr))
  t.same(agentsOf(second.stdout), agents, 'the same two served the next launch')
  // Nothing stops them: each leaves two seconds after its launch ended (waited for by watching the process).
  for (const pid of agents) t.ok(await exitedOnItsOwn(pid), `agent ${pid} left by itself`)
  await nothingLeft(t, s, dirs)
})

t.test('two launches at once on the node, of two sets: the lingering agent serves both', async (t) => {
  const { s, dirs, libs, env, agents: [agent] } = await firstLaunch(t, ALPHA)
  // The first launch's rank waits, mounted, until the second's rank has run from its own mount.
  const go = path.join(s.dir, 'go')
  const pidOf = `"agent $(sed 's/.*"pid":\\([0-9]*\\).*/\\1/' "$P2PRUN_RUN_DIR"/job-*-alpha/ready.json | head -n 1)"`
  const waiting = launch(s, dirs, ['-n', '1', '--launcher', 'local', '--libs', libs, 'sh', '-c',
    `echo ${pidOf}; while [ ! -e ${go} ]; do sleep 0.05; done; ls "$P2PRUN_MOUNT"`], env)
  t.same(Number((await waitForLine(waiting, /^agent (\d+)$/))[1]), agent, 'the first launch is served by the lingering agent')
  const other = path.join(s.dir, 'other')
  await mkdir(other)
  await copyFile(path.join(libs, 'libgreet.so.1'), path.join(other, 'libgreet.so.1'))
  const second = await launch(s, dirs, ['-n', '1', '--launcher', 'local', '--libs', other, 'sh', '-c', `echo ${pidOf}; ls "$P2PRUN_MOUNT" && touch ${go}`], env)
  t.equal(second.exitCode, 0, `the second launch: ${String(second.stderr)}`)
  t.match(second.stdout, new RegExp(`^agent ${agent}\nlibgreet\\.so\\.1$`), 'the second, of another set, by the same agent meanwhile')
  const r = await waiting
  t.equal(r.exitCode, 0, String(r.stderr))
  t.match(r.stdout, /libdata\.so/, 'and the first still reads its own set')
  await terminate(agent as number, 10_000)
  await nothingLeft(t, s, dirs)
})

/** Waits (polling /proc, bounded by the test's timeout) until `pid` has exited on its own. */
async function exitedOnItsOwn (pid: number): Promise<boolean> {
  while (await isAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 50))
  return true
}

t.test('a killed agent\'s socket is replaced by the next agent; what is not a hand-off is refused, and the agent goes on', async (t) => {
  const { s, dirs, app, libs, env, agents: [dead] } = await firstLaunch(t, ALPHA)
  process.kill(dead as number, 'SIGKILL')
  await exitedOnItsOwn(dead as number)
  const files = warmAgentFiles(dirs.run, 'alpha')
  const left = await readWarmAgentRecord(files.record)
  t.ok(left?.store, 'its socket, its record and the store it kept are left behind')

  const second = await launchShowingAgent(s, dirs, libs, app, env)
  t.equal(second.exitCode, 0, String(second.stderr))
  const [fresh] = agentsOf(second.stdout)
  t.not(fresh, dead, 'a new agent served the launch')
  t.ok(headSent(second.stderr) >= 1, 'fetching the set again')
  t.equal((await readdir(s.dir)).filter((n) => n.startsWith('p2prun-')).length, 1, 'the dead agent\'s store removed: one kept, the new agent\'s')
  t.match(await readWarmAgentRecord(files.record), { pid: fresh, socket: files.socket }, 'and lingers in the dead one\'s place')

  for (const [name, bytes] of [['garbage', Buffer.from('GET / HTTP/1.1\r\n\r\n\0\0')],
    ['a hand-off without a job spec', encodeHandoff({ node: 'alpha', launchId: 'abc', expect: 1, env: { PATH: '/bin' } })]] as const) {
    t.match(await answerTo(files.socket, bytes), /^no .+\n$/, `${name}: refused with the reason`)
  }
  t.ok(await isAlive(fresh as number), 'the agent still runs')
  const third = await launchShowingAgent(s, dirs, libs, app, env)
  t.equal(third.exitCode, 0, String(third.stderr))
  t.same([...agentsOf(third.stdout)], [fresh], 'and serves the next launch')
  await terminate(fresh as number, 10_000)
  await nothingLeft(t, s, dirs)
})

/** What the agent at `socket` answers to `bytes`, up to its close. */
function answerTo (socket: string, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(socket, () => c.end(bytes))
    let text = ''
    c.on('data', (d: Buffer) => { text += String(d) })
    c.on('close', () => resolve(text))
    c.on('error', reject)
  })
}

t.test('the hand-off: encoded and decoded alike; incomplete, foreign or oversized input is told apart', async (t) => {
  const h = { node: 'n1', launchId: 'abcd', expect: 3, env: { P2PRUN_JOB: 'e30', EMPTY: '', WITH_EQ: 'a=b' } }
  const bytes = encodeHandoff(h)
  t.same(decodeHandoff(bytes), h)
  t.equal(decodeHandoff(bytes.subarray(0, bytes.length - 1)), undefined, 'one byte short: not yet whole')
  t.throws(() => decodeHandoff(Buffer.from('p2prun-launch 2\0n\0l\0' + '1\0\0')), /not a hand-off of this p2prun/)
  t.throws(() => decodeHandoff(Buffer.from(`${HANDOFF_MAGIC}\0n1\0l\0three\0\0`)), /without its node, launch id or rank count/)
  t.throws(() => decodeHandoff(Buffer.alloc(5 << 20, 'a')), /a hand-off of more than/)
})

t.test('the Node step\'s hand-off: refused, the rank starts its own agent; unanswered in time, the node\'s failure, and none may start', async (t) => {
  const s = await scratch(t)
  const runDir = path.join(s.dir, 'run')
  const state = NodeState.of(runDir, 'abcd', 'n1')
  await state.create()
  let answer = 'no busy\n'
  const server = createServer((c) => {
    c.on('error', () => {})
    c.on('data', (d: Buffer) => { if (d.includes('\0\0') && answer) c.end(answer) })
  })
  await new Promise<void>((resolve) => server.listen(warmAgentFiles(runDir, 'n1').socket, resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const h = { node: 'n1', launchId: 'abcd', expect: 1, env: { P2PRUN_JOB: 'x' } }
  t.equal(await handToWarmAgent(runDir, h, state, 60_000), undefined, 'refused: not handed')
  answer = '' // silent
  t.ok(await handToWarmAgent(runDir, h, state, 200), 'unanswered: taken as handed, so that no other agent starts')
  await t.rejects(state.waitReady('node n1', 1000), { message: 'node n1: the p2prun agent failed: the lingering node agent did not answer its hand-off in time' })
})
