// Node agents that linger (agent-linger), native and Node: the node's next launch is handed to the
// agent of the last one, by the native rank step and by the Node one; it leaves when its time is up, or on SIGTERM,
// and leaves nothing; a dead agent's socket is replaced; what is not a hand-off is refused, and
// the agent goes on.
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { copyFile, mkdir, readdir, readFile, readlink, writeFile } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { decodeJob, encodeJob } from '../lib/session/job-spec.ts'
import { readWarmAgentRecord, warmAgentFiles } from '../lib/session/node-state.ts'
import { isAlive, terminate } from '../lib/session/process.ts'
import { NodeState } from '../lib/session/node-state.ts'
import { decodeHandoff, encodeHandoff, HANDOFF_MAGIC, handToWarmAgent } from '../lib/session/warm-agent.ts'
import { ROOT, waitForLine } from './helpers/cli.ts'
import { launch, launchDirs, mountsUnder, nothingLeft, type LaunchDirs } from './helpers/launch.ts'
import { freePorts } from './helpers/ports.ts'
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

/**
 * Each rank prints which agent serves its mount (the pid in its launch's ready.json, and that
 * process's parent), reads the set, then runs the program.
 */
function launchShowingAgent (s: Scratch, dirs: LaunchDirs, libs: string, app: string, env: Record<string, string>) {
  // One write per line: the two ranks print at once. Every file is read, so the node has the whole
  // set when the launch ends (a launch ends with its ranks, fetched or not).
  const script = `${SHOW_AGENT}; cat "$P2PRUN_MOUNT"/* > /dev/null; exec ${app}`
  return launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', libs, '--stats', 'sh', '-c', script], env)
}

/** "agent PID PARENT": the agent of the rank's own mount (the launch whose ready.json names it), and its parent. */
const SHOW_AGENT = 'r=$(sed \'s/.*"pid":\\([0-9]*\\).*/\\1/\' "$(grep -l "\\"mountPoint\\":\\"$P2PRUN_MOUNT\\"" "$P2PRUN_RUN_DIR"/job-*-$NODE/ready.json)"); ' +
  'echo "agent $r $(cut -d" " -f4 /proc/$r/stat)"'

/** What the launch's summary says the head sent, in sets. */
const headSent = (stderr: unknown) => Number(String(stderr).match(/head sent .* = ([\d.]+)x the/)?.[1])

/**
 * Both agents linger: the native one serves each launch in a child it forks for it and hands the
 * store back to itself (unlinked: none on disk); the Node one serves them in-process, its kept
 * store a directory its record names.
 */
const AGENTS = [
  { kind: 'native', env: {}, storesOnDisk: 0, forks: true },
  { kind: 'node', env: { P2PRUN_AGENT: 'node' }, storesOnDisk: 1, forks: false }
] as const

/** One node, alpha, whose agent lingers long enough for any test. */
const ALPHA = { P2PRUN_NODE_NAME: 'alpha', NODE: 'alpha', P2PRUN_AGENT_LINGER: '300' }

/** The example, and a first launch with `env`, whose agents then linger: their pids, from their records. */
async function firstLaunch (t: Test, agent: typeof AGENTS[number], env: Record<string, string>, nodes: readonly string[]) {
  const ex = await example(t)
  const first = await launchShowingAgent(ex.s, ex.dirs, ex.libs, ex.app, { ...env, ...agent.env })
  t.equal(first.exitCode, 0, String(first.stderr))
  const agents = await Promise.all(nodes.map(async (node) => (await readWarmAgentRecord(warmAgentFiles(ex.dirs.run, node).record))?.pid ?? 0))
  t.ok(servedBy(first.stdout, agents, agent.forks), `each rank served by its node's lingering ${agent.kind} agent`)
  return { ...ex, env: { ...env, ...agent.env }, first, agents }
}

/** The agents that served each rank (the pid and parent it printed). */
const servingOf = (stdout: string) => [...stdout.matchAll(/^agent (\d+) (\d+)$/gm)].map((m) => ({ pid: Number(m[1]), parent: Number(m[2]) }))

/**
 * Whether a rank printed its agent, and every one was one of `agents` (the Node agent serves its
 * launches in-process) or, with `forks`, a child one of them forked for the launch (the native one).
 */
function servedBy (stdout: string, agents: readonly number[], forks: boolean): boolean {
  const serving = servingOf(stdout)
  return serving.length > 0 && serving.every((s) => forks ? agents.includes(s.parent) : agents.includes(s.pid))
}

/** Stores of the test's launches on disk (the store directory is the scratch directory). */
const storesOnDisk = async (dir: string) => (await readdir(dir)).filter((n) => n.startsWith('p2prun-')).length

for (const a of AGENTS) {
  t.test(`${a.kind} agent: the native rank step hands the next launch to the lingering agent; SIGTERM ends it and nothing is left`, async (t) => {
    const { s, dirs, app, libs, env, first, agents: [agent] } = await firstLaunch(t, a, ALPHA, ['alpha'])
    t.equal(first.stdout.match(/hello, world, from libgreet/g)?.length, 2, 'both ranks ran')
    const files = warmAgentFiles(dirs.run, 'alpha')
    const record = await readWarmAgentRecord(files.record)
    t.match(record, { pid: agent, socket: files.socket }, 'the agent lingers, and says where')
    t.equal(record?.store === undefined ? 0 : 1, a.storesOnDisk, 'its record names a store on disk if it keeps one there')
    t.ok(agent && await isAlive(agent), 'its process runs')
    t.equal(await readlink(`/proc/${agent}/cwd`), '/', 'in /: it keeps no directory of the user\'s busy')

    t.ok(headSent(first.stderr) >= 1, `the head sent the set once (${headSent(first.stderr)}x)`)
    t.equal(await storesOnDisk(s.dir), a.storesOnDisk, 'its store is kept (the native agent\'s unlinked)')

    const second = await launchShowingAgent(s, dirs, libs, app, env)
    t.equal(second.exitCode, 0, String(second.stderr))
    t.equal(second.stdout.match(/hello, world, from libgreet/g)?.length, 2, 'both ranks of the next launch ran')
    t.ok(servedBy(second.stdout, [agent as number], a.forks), 'served by the same agent: no new one started')
    t.match(second.stdout, /^rank 0 lib \S+\/mnt\/\w+-alpha\/libgreet\.so\.1$/m, 'from the mount')
    t.ok(headSent(second.stderr) < 0.05, `the same set again: from the kept store, the head sent ${headSent(second.stderr)}x`)

    t.ok(await terminate(agent as number, 10_000), 'SIGTERM ends it')
    await nothingLeft(t, s, dirs)
  })

  t.test(`${a.kind} agent: the Node rank step (a node per rank) hands over too; the agents leave when their time is up`, async (t) => {
    const { s, dirs, app, libs, env, agents } = await firstLaunch(t, a, { P2PRUN_NODE_PER_RANK: '1', NODE: '*', P2PRUN_AGENT_LINGER: '2' }, await hostRanks())
    t.equal(new Set(agents).size, 2, 'one agent per emulated node')
    const second = await launchShowingAgent(s, dirs, libs, app, env)
    t.equal(second.exitCode, 0, String(second.stderr))
    t.ok(servedBy(second.stdout, agents, a.forks), 'the same two served the next launch')
    // Nothing stops them: each leaves two seconds after its launch ended (waited for by watching the process).
    for (const pid of agents) t.ok(await exitedOnItsOwn(pid), `agent ${pid} left by itself`)
    await nothingLeft(t, s, dirs)
  })

  t.test(`${a.kind} agent: two launches at once on the node, of two sets: the lingering agent serves both`, async (t) => {
    const { s, dirs, libs, env, agents: [agent] } = await firstLaunch(t, a, ALPHA, ['alpha'])
    // The first launch's rank waits, mounted, until the second's rank has run from its own mount.
    const go = path.join(s.dir, 'go')
    const waiting = launch(s, dirs, ['-n', '1', '--launcher', 'local', '--libs', libs, 'sh', '-c',
      `${SHOW_AGENT}; while [ ! -e ${go} ]; do sleep 0.05; done; ls "$P2PRUN_MOUNT"`], env)
    const [, pid, parent] = await waitForLine(waiting, /^agent (\d+) (\d+)$/)
    t.equal(Number(a.forks ? parent : pid), agent, 'the first launch is served by the lingering agent')
    const other = path.join(s.dir, 'other')
    await mkdir(other)
    await copyFile(path.join(libs, 'libgreet.so.1'), path.join(other, 'libgreet.so.1'))
    const second = await launch(s, dirs, ['-n', '1', '--launcher', 'local', '--libs', other, 'sh', '-c', `${SHOW_AGENT}; ls "$P2PRUN_MOUNT" && touch ${go}`], env)
    t.equal(second.exitCode, 0, `the second launch: ${String(second.stderr)}`)
    t.ok(servedBy(second.stdout, [agent as number], a.forks), 'the second, of another set, by the same agent meanwhile')
    t.match(second.stdout, /^libgreet\.so\.1$/m, 'from a mount of its own set')
    const r = await waiting
    t.equal(r.exitCode, 0, String(r.stderr))
    t.match(r.stdout, /libdata\.so/, 'and the first still reads its own set')
    await terminate(agent as number, 10_000)
    await nothingLeft(t, s, dirs)
  })

  t.test(`${a.kind} agent: a killed agent's socket is replaced by the next agent; what is not a hand-off is refused, and the agent goes on`, async (t) => {
    const { s, dirs, app, libs, env, agents: [dead] } = await firstLaunch(t, a, ALPHA, ['alpha'])
    process.kill(dead as number, 'SIGKILL')
    await exitedOnItsOwn(dead as number)
    const files = warmAgentFiles(dirs.run, 'alpha')
    const left = await readWarmAgentRecord(files.record)
    t.ok(left, 'its socket and its record are left behind')
    t.equal(await storesOnDisk(s.dir), a.storesOnDisk, 'and the store it kept, if on disk')

    const second = await launchShowingAgent(s, dirs, libs, app, env)
    t.equal(second.exitCode, 0, String(second.stderr))
    const fresh = (await readWarmAgentRecord(files.record))?.pid ?? 0
    t.not(fresh, dead, 'a new agent lingers in the dead one\'s place')
    t.ok(servedBy(second.stdout, [fresh], a.forks), 'and served the launch')
    t.ok(headSent(second.stderr) >= 1, 'fetching the set again')
    t.equal(await storesOnDisk(s.dir), a.storesOnDisk, 'the dead agent\'s store removed: at most one kept, the new agent\'s')

    for (const [name, bytes, reason] of [['garbage', Buffer.from('GET / HTTP/1.1\r\n\r\n\0\0'), /^no .+\n$/],
      ['a hand-off without a job spec', encodeHandoff({ node: 'alpha', launchId: 'abc', expect: 1, env: { PATH: '/bin' } }), /^no .+\n$/],
      ['a Slurm job\'s launch', encodeHandoff({ node: 'alpha', launchId: 'abc', expect: 1, env: { PATH: '/bin', SLURM_JOB_ID: '123' } }),
        /^no this agent serves launches outside Slurm jobs\n$/]] as const) {
      t.match(await answerTo(files.socket, bytes), reason, `${name}: refused with the reason`)
    }
    t.ok(await isAlive(fresh), 'the agent still runs')
    const third = await launchShowingAgent(s, dirs, libs, app, env)
    t.equal(third.exitCode, 0, String(third.stderr))
    t.ok(servedBy(third.stdout, [fresh], a.forks), 'and serves the next launch')
    await terminate(fresh, 10_000)
    await nothingLeft(t, s, dirs)
  })
}

t.test('a lingering native agent turns down a launch that chose the Node agent: the rank starts one of its own, which serves it alone', async (t) => {
  const { s, dirs, app, libs, env, agents: [agent] } = await firstLaunch(t, AGENTS[0], ALPHA, ['alpha'])
  const second = await launchShowingAgent(s, dirs, libs, app, { ...env, P2PRUN_AGENT: 'node' })
  t.equal(second.exitCode, 0, String(second.stderr))
  const [served] = servingOf(second.stdout)
  t.ok(served && served.pid !== agent && served.parent !== agent, `served by an agent of its own (${JSON.stringify(served)}, the lingering one ${agent})`)
  t.ok(headSent(second.stderr) >= 1, 'which fetched the set')
  t.equal((await readWarmAgentRecord(warmAgentFiles(dirs.run, 'alpha').record))?.pid, agent, 'the native agent still lingers')
  await terminate(agent as number, 10_000)
  await nothingLeft(t, s, dirs)
})

t.test('native agent: SIGTERM while it serves a launch ends that launch\'s agent and mount, then the lingering agent', async (t) => {
  const { s, dirs, libs, env, agents: [agent] } = await firstLaunch(t, AGENTS[0], ALPHA, ['alpha'])
  const go = path.join(s.dir, 'go')
  const running = launch(s, dirs, ['-n', '1', '--launcher', 'local', '--libs', libs, 'sh', '-c',
    `${SHOW_AGENT}; while [ ! -e ${go} ]; do sleep 0.05; done`], env)
  const [, child, parent] = await waitForLine(running, /^agent (\d+) (\d+)$/)
  t.equal(Number(parent), agent, 'the launch is served by a child of the lingering agent')
  t.equal((await mountsUnder(dirs.mounts)).length, 1, 'its mount is up')
  t.ok(await terminate(agent as number, 10_000), 'SIGTERM ends the lingering agent')
  t.notOk(await isAlive(Number(child)), 'after the agent of the launch it served')
  t.same(await mountsUnder(dirs.mounts), [], 'whose mount is gone')
  await writeFile(go, '')
  await running
  await nothingLeft(t, s, dirs)
})

t.test('native agent: a launch\'s agent that dies before its mount is up is the node\'s failure, recorded by the lingering agent, which goes on', async (t) => {
  const { s, dirs, app, libs, env, agents: [agent] } = await firstLaunch(t, AGENTS[0], ALPHA, ['alpha'])
  // The first launch's spec (the agent's environment), made one whose agent must fetch the
  // description from a head that is not there: it waits.
  const environ = (await readFile(`/proc/${agent}/environ`, 'utf8')).split('\0')
  const job = decodeJob(environ.find((v) => v.startsWith('P2PRUN_JOB='))?.slice('P2PRUN_JOB='.length))
  const [none] = await freePorts(1)
  const stuck = { ...job, launchId: 'stuck', description: undefined, trackers: [`http://127.0.0.1:${none}/announce`], seeders: [`127.0.0.1:${none}`] }
  const state = NodeState.of(dirs.run, 'stuck', 'alpha')
  await state.create()
  const handed = connect(warmAgentFiles(dirs.run, 'alpha').socket)
  handed.on('error', () => {})
  const closed = new Promise((resolve) => handed.on('close', resolve))
  handed.write(encodeHandoff({ node: 'alpha', launchId: 'stuck', expect: 1, env: { PATH: process.env.PATH ?? '/bin', P2PRUN_JOB: encodeJob(stuck) } }))
  t.equal(String(await once(handed, 'data')), 'ok\n', 'taken')
  let child: number | undefined
  while (!(child = Number((await readFile(`/proc/${agent}/task/${agent}/children`, 'utf8')).trim().split(' ')[0]) || undefined)) await new Promise((resolve) => setTimeout(resolve, 20))
  process.kill(child, 'SIGKILL')
  await t.rejects(state.waitReady('node alpha', 10_000), { message: 'node alpha: the p2prun agent failed: the node agent exited (SIGKILL) before its mount was ready' })
  await closed
  t.pass('the rank\'s connection ended with its agent')
  await state.remove() // the failed launch's ranks would
  t.ok(await isAlive(agent as number), 'the lingering agent goes on')
  const next = await launchShowingAgent(s, dirs, libs, app, env)
  t.equal(next.exitCode, 0, String(next.stderr))
  t.ok(servedBy(next.stdout, [agent as number], true), 'and serves the next launch')
  await terminate(agent as number, 10_000)
  await nothingLeft(t, s, dirs)
})

/** Waits (polling /proc, bounded by the test's timeout) until `pid` has exited on its own. */
async function exitedOnItsOwn (pid: number): Promise<boolean> {
  while (await isAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 50))
  return true
}

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
