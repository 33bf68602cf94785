// The rank step without Node (native/rank-step.c), run directly with a spec and a node state made
// here, and a stand-in installation whose `bin/p2prun node-agent` is a small script: what it
// prints, what it registers, which agent it starts, the failure it records when that agent dies
// first, and every case it hands to the Node step (exit 100).
import { execFile } from 'node:child_process'
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { createServer, type Socket } from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { loadConfig } from '../lib/config.ts'
import { distFile, RANK_STEP_FILE } from '../lib/dist-files.ts'
import { encodeJob, JOB_SPEC_VERSION, nodeSettings, type JobSpec } from '../lib/session/job-spec.ts'
import { taskEnvTemplate } from '../lib/session/rank-env.ts'
import { scratch } from './helpers/scratch.ts'
import { NodeState, warmAgentFiles } from '../lib/session/node-state.ts'
import { decodeHandoff, type Handoff } from '../lib/session/warm-agent.ts'

const STEP = distFile(RANK_STEP_FILE)
const NODE = 'n1'
const LAUNCH = 'abcd1234'

async function setup (t: Test, agentScript = 'exit 0', flags: Record<string, string> = {}) {
  // Short: the lingering agent's socket path (in the run directory) has a limit of 107 bytes.
  const { dir } = await scratch(t)
  const runDir = path.join(dir, 'run')
  const root = path.join(dir, 'install')
  await mkdir(path.join(root, 'bin'), { recursive: true })
  // The stand-in agent: whatever the test asks of it, after noting its arguments.
  const cli = path.join(root, 'bin/p2prun')
  await writeFile(cli, `#!/bin/sh\necho "$@" > ${path.join(dir, 'agent-args')}\n${agentScript}\n`)
  await chmod(cli, 0o755)
  const job: JobSpec = {
    version: JOB_SPEC_VERSION,
    launchId: LAUNCH,
    infoHash: 'a'.repeat(40),
    descriptionUrl: 'http://10.0.0.1:8000/p2prun/x.torrent',
    trackers: [],
    seeders: [],
    mountPoint: '/m/%j-%n',
    libDirs: ['lib'],
    taskEnv: taskEnvTemplate({ libDirs: ['lib'] }),
    node: nodeSettings(await loadConfig({ flags: { 'run-dir': runDir, 'start-timeout': '60', ...flags }, env: {}, cwd: '/' })),
    program: 'opt/app'
  }
  const state = NodeState.of(runDir, LAUNCH, NODE)
  return { dir, root, job, state }
}

function step (root: string, job: JobSpec | string, env: Record<string, string>, program = 'true') {
  const spec = typeof job === 'string' ? job : encodeJob(job)
  return promisify(execFile)(STEP, [root, '4242', program], { env: { PATH: '/usr/bin:/bin', P2PRUN_JOB: spec, P2PRUN_NODE_NAME: NODE, ...env } })
    .then((r) => ({ code: 0, stdout: r.stdout }), (e: { code: number, stdout: string }) => ({ code: e.code, stdout: e.stdout }))
}

const READY = { mountPoint: '/m/x', pid: 1, storePath: '/s' }

t.test('local rank 0 starts the agent, detached with the rank count, and prints what the rank execs', async (t) => {
  const { dir, root, job, state } = await setup(t)
  // The stand-in agent says ready as an agent does: the rank's environment, then ready.json.
  await writeFile(path.join(root, 'bin/p2prun'), `#!/bin/sh\necho "$@" > ${path.join(dir, 'agent-args')}\n` +
    `printf 'LD_LIBRARY_PATH^=/m/x/lib\\nP2PRUN_MOUNT=/m/x\\nLD_AUDIT+=/a.so\\n' > ${state.dir}/task-env\n` +
    `printf '${JSON.stringify(READY)}' > ${state.dir}/r.tmp && mv ${state.dir}/r.tmp ${state.dir}/ready.json\n`)
  const r = await step(root, job, { P2PRUN_LOCAL_RANK: '0', P2PRUN_LOCAL_SIZE: '3', LD_LIBRARY_PATH: '/u', LD_AUDIT: '/own.so' })
  t.equal(r.code, 0)
  t.same(r.stdout.split('\n'), ['/m/x/lib:/u', '/m/x/opt/app', 'P2PRUN_MOUNT=/m/x', 'LD_AUDIT=/own.so:/a.so', ''], 'the library path, the program in the mount, the exports')
  t.equal((await readFile(path.join(dir, 'agent-args'), 'utf8')).trim(), `node-agent --node ${NODE} --launch-id ${LAUNCH} --expect 3`)
  t.same(await readdir(path.join(state.dir, 'ranks')), ['4242'], 'the rank registered')
  t.ok((await readdir(state.dir)).includes('agent.lock'), 'and claimed the agent')
})

t.test('another local rank starts nothing, waits for the agent, prints the same', async (t) => {
  const { dir, root, job, state } = await setup(t)
  await state.create()
  await state.claimAgent()
  await state.ready(READY, [{ name: 'LD_LIBRARY_PATH', op: 'prepend', value: '/m/x/lib' }])
  const r = await step(root, job, { P2PRUN_LOCAL_RANK: '2' })
  t.equal(r.code, 0)
  t.same(r.stdout.split('\n'), ['/m/x/lib', '/m/x/opt/app', ''])
  t.same((await readdir(dir)).filter((n) => n === 'agent-args'), [], 'no agent started')
})

t.test('an agent that exits before it is ready is recorded as the node\'s failure, for the Node step to report', async (t) => {
  const { root, job, state } = await setup(t, 'exit 3')
  const r = await step(root, job, { P2PRUN_LOCAL_RANK: '0', P2PRUN_LOCAL_SIZE: '2' })
  t.equal(r.code, 100, 'handed to the Node step')
  await t.rejects(state.waitReady(`node ${NODE}`, 1000), {
    code: 'LAUNCH',
    message: `node ${NODE}: the p2prun agent failed: the node agent exited (code 3) before its mount was ready`,
    hint: `see ${state.dir}/agent.log`
  })
})

t.test('what it does not expect goes to the Node step', async (t) => {
  const { root, job, state } = await setup(t)
  await state.create()
  await state.claimAgent()
  await state.ready(READY, [])
  const cases: [string, JobSpec | string, Record<string, string>, string?][] = [
    ['no local rank', job, {}],
    ['local rank 0 without a rank count', job, { P2PRUN_LOCAL_RANK: '0' }],
    ['one rank per node (emulation)', job, { P2PRUN_LOCAL_RANK: '1', P2PRUN_NODE_PER_RANK: '1' }],
    ['another spec version', Buffer.from(JSON.stringify({ ...job, version: JOB_SPEC_VERSION + 1 })).toString('base64url'), { P2PRUN_LOCAL_RANK: '1' }],
    ['a spec that is not base64url', '%%%', { P2PRUN_LOCAL_RANK: '1' }],
    ['a program not found (a set of directories: it runs as given)', { ...job, program: undefined }, { P2PRUN_LOCAL_RANK: '1' }, 'no-such-program-here']
  ]
  for (const [name, spec, env, program] of cases) t.equal((await step(root, spec, env, program)).code, 100, name)
  t.equal((await step(root, { ...job, program: undefined }, { P2PRUN_LOCAL_RANK: '1' }, 'sh')).code, 0, 'while a program on PATH runs as given')
})

/**
 * A lingering agent played by the test on the node's socket: it reads the hand-off, then `answer`s
 * it (given the connection and what was handed over).
 */
async function lingering (t: Test, runDir: string, answer: (c: Socket, h: Handoff) => void) {
  const handed: Handoff[] = []
  const server = createServer((c) => {
    let bytes = Buffer.alloc(0)
    c.on('error', () => {}) // the rank closes when it is done
    c.on('data', (d: Buffer) => {
      bytes = Buffer.concat([bytes, d])
      const h = decodeHandoff(bytes)
      if (h) { handed.push(h); answer(c, h) }
    })
  })
  await mkdir(runDir, { recursive: true })
  await new Promise<void>((resolve) => server.listen(warmAgentFiles(runDir, NODE).socket, resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return handed
}

t.test('with agent-linger, local rank 0 hands the launch to the lingering agent: the hand-off is warm-agent.ts\'s, and no agent is started', async (t) => {
  const { dir, root, job, state } = await setup(t, 'exit 0', { 'agent-linger': '60' })
  const handed = await lingering(t, job.node.runDir, (c) => {
    c.write('ok\n')
    void state.ready(READY, [{ name: 'LD_LIBRARY_PATH', op: 'prepend', value: '/m/x/lib' }])
  })
  const r = await step(root, job, { P2PRUN_LOCAL_RANK: '0', P2PRUN_LOCAL_SIZE: '3' })
  t.equal(r.code, 0)
  t.same(r.stdout.split('\n'), ['/m/x/lib', '/m/x/opt/app', ''])
  t.equal(handed.length, 1)
  t.match(handed[0], { node: NODE, launchId: LAUNCH, expect: 3, env: { P2PRUN_JOB: encodeJob(job), P2PRUN_NODE_NAME: NODE, P2PRUN_LOCAL_SIZE: '3' } }, 'the rank\'s launch and environment')
  t.same((await readdir(dir)).filter((n) => n === 'agent-args'), [], 'no agent started')
})

t.test('an agent that does not answer the hand-off within the start timeout: the node\'s failure, and no other agent started', async (t) => {
  const { dir, root, job, state } = await setup(t, 'exit 0', { 'agent-linger': '60', 'start-timeout': '1' })
  const handed = await lingering(t, job.node.runDir, () => {}) // reads it, and says nothing
  const r = await step(root, job, { P2PRUN_LOCAL_RANK: '0', P2PRUN_LOCAL_SIZE: '1' })
  t.equal(r.code, 100, 'handed to the Node step')
  t.equal(handed.length, 1)
  await t.rejects(state.waitReady(`node ${NODE}`, 1000), {
    message: `node ${NODE}: the p2prun agent failed: the lingering node agent did not answer its hand-off in time`,
    hint: `${warmAgentFiles(job.node.runDir, NODE).record} names it: stop it, or set P2PRUN_AGENT_LINGER=0`
  })
  t.same((await readdir(dir)).filter((n) => n === 'agent-args'), [], 'no agent started: the silent one may still take the launch')
})

t.test('an agent that refuses the hand-off: the rank starts its own; one that took it and ended: the node\'s failure', async (t) => {
  const refused = await setup(t, 'exit 0', { 'agent-linger': '60' })
  await lingering(t, refused.job.node.runDir, (c) => c.end('no busy\n'))
  await step(refused.root, refused.job, { P2PRUN_LOCAL_RANK: '0', P2PRUN_LOCAL_SIZE: '1' })
  t.equal((await readFile(path.join(refused.dir, 'agent-args'), 'utf8')).trim(), `node-agent --node ${NODE} --launch-id ${LAUNCH} --expect 1`, 'its own agent started')

  const { root, job, state } = await setup(t, 'exit 0', { 'agent-linger': '60' })
  await lingering(t, job.node.runDir, (c) => c.end('ok\n'))
  const r = await step(root, job, { P2PRUN_LOCAL_RANK: '0', P2PRUN_LOCAL_SIZE: '1' })
  t.equal(r.code, 100, 'handed to the Node step')
  await t.rejects(state.waitReady(`node ${NODE}`, 1000), {
    message: `node ${NODE}: the p2prun agent failed: the lingering node agent ended before its mount was ready`,
    hint: `see ${state.dir}/agent.log`
  })
})
