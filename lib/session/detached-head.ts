// A head that outlives the command that starts it (`p2prun head-daemon`):
//   a Slurm job's  the SPANK plugin starts it at submit time; the job's epilogs stop it, and it
//                  leaves by itself when none of its jobs is queued (slurm-queue.ts)
//   a launch's     `p2prun head` starts it for a launch run by hand, the launcher's own command in
//                  between, `p2prun head --stop` stops it: what `p2prun --dry-run` prints
// It describes the set itself and tells its starter the job spec on a pipe once it serves.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { loadConfig, type SettingName } from '../config.ts'
import { failureLine, P2prunError } from '../errors.ts'
import { newJobSecret } from '../swarm/job-auth.ts'
import { checkDiscovery, jobSpecOf, mountPointOf } from './head.ts'
import { launchSet } from './launch-set.ts'
import { encodeJob, SLURM_LAUNCH, type JobSpec } from './job-spec.ts'
import { readyLine } from './process.ts'
import { HeadJobs } from './slurm-queue.ts'

/** What the head serves and how: made by startDetachedHead, read by runHeadDaemon (--request). */
export interface HeadRequest {
  /** Absolute directories, and AUTO_LIBS with a program. */
  readonly libs: readonly string[]
  readonly program?: string
  /** The nodes' mount point template; default: the description's, per launch and node. */
  readonly mountPoint?: string
  /** A Slurm job's head (its spec goes through the SPANK plugin's buffer: no description in it). */
  readonly slurm: boolean
  /** Settings given as options; the others come from the environment and files, as anywhere. */
  readonly settings?: Partial<Record<SettingName, string | boolean>>
  readonly configFile?: string
}

/**
 * Starts `p2prun head-daemon` detached (it outlives its starter) and returns the job spec it hands
 * back once ready; its failure, a record on the same pipe, becomes ours.
 */
export async function startDetachedHead (cli: readonly string[], request: HeadRequest): Promise<string> {
  const [file, ...args] = cli as [string, ...string[]]
  const child = spawn(file, [...args, 'head-daemon', '--request', JSON.stringify(request), '--notify-fd', '3'], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe']
  })
  try {
    return await readyLine(child, () => new P2prunError('LAUNCH', 'the head exited before it was ready'))
  } finally {
    child.unref()
  }
}

/** The request on head-daemon's command line; anything else there is no starter's. */
export function parseHeadRequest (raw: string): HeadRequest {
  const r = JSON.parse(raw) as HeadRequest
  if (!Array.isArray(r.libs) || typeof r.slurm !== 'boolean') throw new P2prunError('USAGE', 'head-daemon: not a request from p2prun')
  return r
}

/**
 * The detached head: tells `notify` "ok SPEC" or "error REASON", then serves until it is asked to
 * stop (its stop URL), a signal comes, or (a Slurm job's) the queue holds none of its jobs.
 */
export async function runHeadDaemon (request: HeadRequest, notify: (line: string) => Promise<void>, untilSignal: Promise<unknown>): Promise<void> {
  // A Slurm job's node settings (run_dir, store_dir, mode) arrive here as P2PRUN_* from the plugin.
  const config = await loadConfig({ flags: request.settings ?? {}, env: process.env, cwd: process.cwd(), configFile: request.configFile })
  // Which jobs are a Slurm head's: those sbatch submits from here in a moment (slurm-queue.ts).
  const jobs = request.slurm ? new HeadJobs(new Date(), process.cwd(), config.slurmWatchMs) : undefined
  const who = request.slurm ? 'p2prun slurm head' : 'p2prun head'
  let head
  let job: JobSpec
  try {
    checkDiscovery(config, request.slurm)
    // P2PRUN_FOLLOW_SYMLINKS (and P2PRUN_LIBS_POLICY) in the starter's environment, or in a settings file.
    const { desc, layout, placement } = await launchSet(request.libs, request.program ?? '', config.libsPolicy,
      { env: process.env, cwd: process.cwd(), describe: { followSymlinks: config.followSymlinks } })
    const { startHead } = await import('../head.ts')
    head = await startHead(desc, layout, config, (line) => process.stderr.write(`${who}: warning: ${line}\n`), newJobSecret(),
      jobs ? (jobId, stop) => { void jobs.ended(jobId).then((none) => { if (none) stop() }) } : undefined)
    job = jobSpecOf(head, desc, layout, config, {
      launchId: request.slurm ? SLURM_LAUNCH : randomBytes(4).toString('hex'),
      mountPoint: mountPointOf(desc, request.mountPoint),
      placement,
      stopUrl: head.stopUrl,
      inline: !request.slurm
    })
  } catch (err) {
    await notify(`error ${failureLine(err)}`)
    throw err
  }
  await notify(`ok ${encodeJob(job)}`)
  const watching = new AbortController()
  try {
    await Promise.race([head.stopped, untilSignal, ...(jobs ? [jobs.untilGone(watching.signal)] : [])])
  } finally {
    watching.abort()
    await head.close()
  }
}
