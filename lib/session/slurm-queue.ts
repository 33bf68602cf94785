// Which jobs a --p2plibs head serves, from Slurm's queue. sbatch starts the head before the job
// exists (the SPANK plugin runs before submission), and an epilog at the job's end stops it. Two
// cases need more: a job cancelled while pending runs no epilog at all, and a job array shares one
// head among tasks that end one after another (Slurm 22.05 gives the epilog no SLURM_ARRAY_JOB_ID).
// Slurm tells the plugin no job id at submit time either (S_JOB_ID in sbatch's spank_exit:
// ESPANK_NOT_AVAIL, tried), so the head recognises its jobs: of the user's jobs submitted from its
// working directory within moments of its start, the first, and those submitted with it (the tasks
// of an array share its submit time). It leaves when none of them is queued; an epilog's stop
// request only makes it look now. Two jobs submitted from one directory in the same second make
// their heads wait for both: never stop too early.
import { setTimeout as delay } from 'node:timers/promises'
import { commandOutput } from '../command-output.ts'

/** A job submitted this long before the head started is not its job (clocks of one host). */
const SUBMITTED_BEFORE_MS = 5_000
/**
 * sbatch submits within moments of the plugin's return: a job submitted later than this many of
 * the head's looks is not its job, and with none of its jobs seen by then (sbatch failed, or the
 * job was cancelled before the first look), the head leaves. 3 s to 2 minutes.
 */
const SUBMITTED_WITHIN_LOOKS = 30

interface QueuedJob {
  /** Slurm's job id: each task of an array has its own once it runs. */
  readonly id: string
  /** The array's job id, and the task's index; undefined for a job that is no array task. */
  readonly arrayJob: string
  readonly arrayTask: string | undefined
  readonly state: string
  readonly submitted: number
  readonly workDir: string
}

export class HeadJobs {
  private readonly from: number
  private readonly to: number
  private readonly workDir: string
  private readonly intervalMs: number
  /** Jobs seen in the queue that are this head's. */
  private readonly mine = new Set<string>()
  /** The submit time of the head's first job: an array's tasks share it, a later job does not. */
  private submitted: number | undefined
  /** Jobs whose epilog said they ended. */
  private readonly finished = new Set<string>()

  /** `started`: the head's start by this host's clock; `workDir`: sbatch's, which the head inherited. */
  constructor (started: Date, workDir: string, intervalMs: number) {
    this.from = started.getTime() - SUBMITTED_BEFORE_MS
    this.to = started.getTime() + Math.min(Math.max(SUBMITTED_WITHIN_LOOKS * intervalMs, 3_000), 120_000)
    this.workDir = workDir
    this.intervalMs = intervalMs
  }

  /** Resolves once none of the head's jobs is queued (or none appeared in time). A failing squeue counts as nothing seen. */
  async untilGone (signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await delay(this.intervalMs, undefined, { signal }).catch(() => {})
      if (!signal.aborted && await this.noneLeft()) return
    }
  }

  /**
   * A job's epilog says it ended: whether the head should go. Only the head's own jobs know its
   * stop URL, so this job is surely its: a job that is no array task ends the head at once (a
   * job submitted in the same second from the same directory is not taken for a task of it); an
   * array's task, once no other task of that array is queued but to complete. An epilog's request
   * can reach the head after its job left the queue (seen on a loaded host: the first task of an
   * array gone from squeue, the second pending, and the head stopped under the second's prolog):
   * then the head goes only if none of the jobs it knows as its own is still queued.
   */
  async ended (jobId: string | undefined): Promise<boolean> {
    if (jobId === undefined) return true // not from a p2prun epilog: stop, as asked
    this.finished.add(jobId)
    const jobs = await queue()
    if (jobs === undefined) return true
    const job = jobs.find((j) => j.id === jobId)
    // Not by id: the tasks still pending share the array's id (Slurm gives each its own when it starts).
    if (job?.arrayTask !== undefined) return !jobs.some((j) => j.arrayJob === job.arrayJob && j.state !== 'COMPLETING')
    if (job !== undefined) return true
    this.look(jobs)
    return this.left(jobs) === 0
  }

  private async noneLeft (): Promise<boolean> {
    const jobs = await queue()
    if (jobs === undefined) return false // the controller may be restarting: look again later
    this.look(jobs)
    return this.left(jobs) === 0 && (this.mine.size > 0 || Date.now() > this.to)
  }

  /** Takes the head's jobs from the queue: submitted from its directory, in its window, at its first job's second. */
  private look (jobs: readonly QueuedJob[]): void {
    const candidates = jobs.filter((j) => j.workDir === this.workDir && j.submitted >= this.from && j.submitted <= this.to)
    this.submitted ??= candidates.length > 0 ? Math.min(...candidates.map((j) => j.submitted)) : undefined
    // To the second, as squeue shows it: the next job of a script that waits for this one comes later.
    for (const job of candidates) if (job.submitted === this.submitted) this.mine.add(job.id)
  }

  /** How many of the head's jobs are queued and have not said they ended. */
  private left (jobs: readonly QueuedJob[]): number {
    return jobs.filter((j) => this.mine.has(j.id) && !this.finished.has(j.id)).length
  }
}

async function queue (): Promise<QueuedJob[] | undefined> {
  // %A: the job id (each array task its own), %F and %K: the array's job id and the task's index
  // (N/A: no array), %T: state, %V: submit time, %Z: working directory.
  const out = await commandOutput('squeue', ['--me', '-h', '-r', '-o', '%A|%F|%K|%T|%V|%Z'], { timeoutMs: 30_000 }).catch(() => undefined)
  if (!out) return undefined
  return out.stdout.split('\n').flatMap((line) => {
    const [id, arrayJob, arrayTask, state, submitted, workDir] = line.split('|')
    const when = submitted ? Date.parse(submitted) : NaN
    return id && arrayJob && arrayTask && state && workDir && Number.isFinite(when)
      ? [{ id, arrayJob, arrayTask: arrayTask === 'N/A' ? undefined : arrayTask, state, submitted: when, workDir }]
      : []
  })
}
