// One launch's state on one node (lib/session/node-state.ts), in process: who starts the agent,
// how a failure and a ready mount reach the ranks, and how an agent sees its ranks end.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdir } from 'node:fs/promises'
import t from 'tap'
import { P2prunError } from '../lib/errors.ts'
import { native } from '../lib/native.ts'
import { NodeState, rankCheckMs } from '../lib/session/node-state.ts'

t.test('of many that ask at once, exactly one starts the agent, and one reports its failure', async (t) => {
  const state = NodeState.of(t.testdir(), 'abcd1234', 'n/1')
  await state.create()
  const claims = await Promise.all(Array.from({ length: 16 }, () => state.claimAgent()))
  t.equal(claims.filter(Boolean).length, 1)
  const reports = await Promise.all(Array.from({ length: 16 }, () => state.claimReport()))
  t.equal(reports.filter(Boolean).length, 1)
})

t.test('a failure reaches the waiting ranks as the agent\'s own error: code, message, hint; the first one wins', async (t) => {
  const state = NodeState.of(t.testdir(), 'abcd1234', 'n1')
  await state.create()
  const waiting = state.waitReady('node n1', 60_000).catch((e: unknown) => e)
  await state.fail({ code: 'FUSE', message: 'FUSE is not available', hint: 'load the fuse module' })
  await state.fail({ code: 'LAUNCH', message: 'the node agent exited (code 1) before its mount was ready' })
  const err = await waiting
  t.ok(err instanceof P2prunError)
  t.match(err, { code: 'FUSE', message: 'node n1: the p2prun agent failed: FUSE is not available', hint: 'load the fuse module' })
})

t.test('a ready record reaches the waiting ranks; none in time is a timeout naming the log', async (t) => {
  const state = NodeState.of(t.testdir(), 'abcd1234', 'n1')
  await state.create()
  const waiting = state.waitReady('node n1', 60_000)
  const env = [{ name: 'LD_LIBRARY_PATH', op: 'prepend', value: '/m/lib:/m/x=y' }, { name: 'LD_AUDIT', op: 'append', value: '/a.so' },
    { name: 'P2PRUN_MOUNT', op: 'set', value: '/m' }] as const
  await state.ready({ mountPoint: '/m', pid: 7, storePath: '/s' }, env)
  t.same(await waiting, { mountPoint: '/m', pid: 7, storePath: '/s' })
  t.same(await state.readTaskEnv(), env, 'the ranks read back the environment the agent wrote')
  const other = NodeState.of(t.testdir(), 'abcd1234', 'n2')
  await other.create()
  await t.rejects(other.waitReady('node n2', 50), { code: 'LAUNCH', message: 'node n2: the p2prun agent was not ready after 0.05 s', hint: new RegExp(`^see ${other.logFile};`) })
})

t.test('the last rank to leave a failed node removes its state, not before', async (t) => {
  const runDir = t.testdir()
  const state = NodeState.of(runDir, 'abcd1234', 'n1')
  await state.create()
  await state.register(101)
  await state.register(102)
  await state.leaveFailed(101, 2)
  t.ok(await NodeState.anyOf(runDir, 'abcd1234'), 'one rank left, one still registered')
  await state.leaveFailed(102, 2)
  t.notOk(await NodeState.anyOf(runDir, 'abcd1234'), 'both left: gone')
  t.same(await readdir(runDir), [])
})

t.test('an agent looks at its ranks every 25 ms while they change, then less often, at most a second apart', async (t) => {
  t.same([0, 1999, 2000, 4000, 8000, 60_000].map(rankCheckMs), [25, 25, 250, 500, 1000, 1000])
})

t.test('the ranks have ended once as many as expected registered and each has ended: seen by pidfds, or by polling without them', async (t) => {
  for (const [how, watchExit] of [['pidfd', native?.watchExit], ['polling', undefined]] as const) {
    const state = NodeState.of(t.testdir(), 'abcd1234', how)
    await state.create()
    const ranks = [spawn('sleep', ['600']), spawn('sleep', ['600'])]
    t.teardown(() => { for (const r of ranks) r.kill('SIGKILL') })
    await state.register(ranks[0]?.pid as number)
    let ended = false
    const waiting = state.ranksEnded(2, watchExit).then(() => { ended = true })
    ranks[0]?.kill()
    await once(ranks[0] as ReturnType<typeof spawn>, 'exit')
    await state.register(ranks[1]?.pid as number) // the second comes after the first has gone: 2 expected
    t.notOk(ended, `${how}: one of two ended, not yet`)
    ranks[1]?.kill()
    await waiting
    t.ok(ended, `${how}: both ended`)
  }
})
