// When a --p2plibs head leaves (lib/session/slurm-queue.ts), decided from Slurm's queue as squeue
// prints it: here a stand-in squeue on PATH prints the queue each case sets, in the format the head
// asks for. The real thing runs in test/slurm.test.ts (a 4-node Slurm); these are the orders of
// events a loaded host produces that the real cluster shows only now and then.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { HeadJobs } from '../lib/session/slurm-queue.ts'

const WORK_DIR = '/home/user/run'

/** squeue's %V: local time to the second, as Slurm prints it. */
function slurmTime (d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0')
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
}

interface Job { id: string, array?: string, task?: string, state: string }

/** A stand-in squeue on PATH for this test; `set` replaces the queue it prints (null: squeue fails). */
function fakeSqueue (t: Test): (jobs: Job[] | null) => void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'p2prun-squeue-test-'))
  const queue = path.join(dir, 'queue')
  writeFileSync(path.join(dir, 'squeue'), `#!/bin/sh\n[ -f ${queue} ] || exit 1\ncat ${queue}\n`)
  chmodSync(path.join(dir, 'squeue'), 0o755)
  const oldPath = process.env.PATH
  process.env.PATH = `${dir}:${oldPath}`
  t.teardown(() => { process.env.PATH = oldPath; rmSync(dir, { recursive: true, force: true }) })
  const submitted = slurmTime(new Date())
  return (jobs) => {
    if (jobs === null) return rmSync(queue, { force: true })
    writeFileSync(queue, jobs.map((j) => `${j.id}|${j.array ?? j.id}|${j.task ?? 'N/A'}|${j.state}|${submitted}|${WORK_DIR}\n`).join(''))
  }
}

/** The head watching the queue for a while, as it does between a job's start and its epilog. */
async function watching (jobs: HeadJobs, ms: number): Promise<void> {
  const controller = new AbortController()
  setTimeout(() => controller.abort(), ms)
  await jobs.untilGone(controller.signal)
}

t.test('an array task\'s epilog that reaches the head after the task left the queue keeps the head while another task is pending', async (t) => {
  const queue = fakeSqueue(t)
  const jobs = new HeadJobs(new Date(), WORK_DIR, 1)
  queue([{ id: '28', array: '27', task: '1', state: 'RUNNING' }, { id: '27', array: '27', task: '2', state: 'PENDING' }])
  await watching(jobs, 50)
  queue([{ id: '27', array: '27', task: '2', state: 'PENDING' }])
  t.equal(await jobs.ended('28'), false, 'task 2 still pending: the head stays')
  queue([{ id: '27', array: '27', task: '2', state: 'COMPLETING' }])
  t.equal(await jobs.ended('27'), true, 'the last task ended: the head goes')
})

t.test('the same when the head never saw the first task: the pending task is taken for its own then', async (t) => {
  const queue = fakeSqueue(t)
  const jobs = new HeadJobs(new Date(), WORK_DIR, 1000)
  queue([{ id: '27', array: '27', task: '2', state: 'PENDING' }])
  t.equal(await jobs.ended('28'), false)
})

t.test('an array task\'s epilog while it is still queued: the head stays for a pending task, goes after the last', async (t) => {
  const queue = fakeSqueue(t)
  const jobs = new HeadJobs(new Date(), WORK_DIR, 1000)
  queue([{ id: '28', array: '27', task: '1', state: 'COMPLETING' }, { id: '27', array: '27', task: '2', state: 'PENDING' }])
  t.equal(await jobs.ended('28'), false)
  queue([{ id: '27', array: '27', task: '2', state: 'COMPLETING' }])
  t.equal(await jobs.ended('27'), true)
})

t.test('a job that is no array task ends the head at once, whether it is still queued or not, and so does a failing squeue', async (t) => {
  const queue = fakeSqueue(t)
  queue([{ id: '40', state: 'COMPLETING' }, { id: '41', state: 'PENDING' }])
  t.equal(await new HeadJobs(new Date(), WORK_DIR, 1000).ended('40'), true, 'queued: at once, though job 41 came from the same directory in the same second')
  queue([])
  t.equal(await new HeadJobs(new Date(), WORK_DIR, 1000).ended('40'), true, 'gone from the queue, nothing else of the head\'s there')
  queue(null)
  t.equal(await new HeadJobs(new Date(), WORK_DIR, 1000).ended('40'), true, 'squeue fails: stop, as asked')
  t.equal(await new HeadJobs(new Date(), WORK_DIR, 1000).ended(undefined), true, 'a stop not from an epilog')
})
