// Slurm integration, the logic behind the thin hooks/ scripts and the slurm/ SPANK plugin:
//   p2prun slurm head --libs A[,B]   (plugin, at submit time) describe, start a detached head, print the job spec
//   p2prun slurm prolog              (Prolog=, root, every node) start the job's node agent, wait until ready
//   p2prun slurm epilog              (Epilog=, root, every node) stop it, leave nothing, stop the head; never fails
// The plugin hands the spec to the prolog/epilog as SPANK_P2PRUN_JOB (spank_job_control_setenv).
import { spawn } from 'node:child_process'
import { chown, mkdir, open, readFile, rm, rmdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Option, type Command } from 'commander'
import { loadConfig, type Config } from '../../lib/config.ts'
import { describeLayout } from '../../lib/describe.ts'
import { layoutOf } from '../../lib/source-layout.ts'
import { formatError, P2prunError, usageError } from '../../lib/errors.ts'
import { decodeJob, encodeJob, JOB_ENV, nodeStateDir, SLURM_LAUNCH, type JobSpec } from '../../lib/job.ts'
import { newJobSecret } from '../../lib/swarm/job-auth.ts'
import { terminate } from '../agent-state.ts'
import { action, advertisedHost, notifyFd, untilSignal } from '../cli-support.ts'
import { LOCK_FILE, READY_FILE, waitForAgent, type NodeReady } from '../rank-step.ts'
import { HeadJobs } from '../slurm-queue.ts'

const collect = (value: string, previous: string[] = []) => [...previous, ...value.split(',').filter(Boolean)]
const EPILOG_WAIT_MS = 15_000

export function registerSlurm (program: Command, cli: readonly string[]): void {
  const slurm = program.command('slurm').description('Slurm integration: what the SPANK plugin and the prolog/epilog hooks call')

  slurm.command('head')
    .description('describe DIRs, start a detached tracker + seeder for a job, print its job spec (SPANK plugin, submit time)')
    .requiredOption('--libs <dirs>', 'library directories, comma-separated or repeated', collect)
    .option('--mount-root <dir>', 'where nodes mount (default: the description\'s mount point)')
    .action(action('slurm head', async (opts: { libs: string[], mountRoot?: string }) => {
      const spec = await startDetachedHead(cli, opts.libs, opts.mountRoot)
      process.stdout.write(`${spec}\n`)
    }))

  program.command('head-daemon', { hidden: true })
    .description('(internal) the detached head of a Slurm job')
    .requiredOption('--libs <dirs>', 'library directories', collect)
    .option('--mount-root <dir>')
    .addOption(new Option('--notify-fd <fd>').hideHelp())
    .action(action('head-daemon', async (opts: { libs: string[], mountRoot?: string, notifyFd?: string }) => {
      await runHeadDaemon(opts.libs, opts.mountRoot, Number(opts.notifyFd ?? 3))
    }))

  slurm.command('prolog')
    .description('start this node\'s agent for the job if it asked for --p2plibs (Prolog=, as root)')
    .action(action('slurm prolog', async () => {
      const job = jobOfHook()
      if (!job) return
      await startNodeAgent(cli, job, await hookConfig())
    }))

  slurm.command('epilog')
    .description('stop this node\'s agent for the job and remove everything (Epilog=, as root; never fails)')
    .action(async () => {
      const job = jobOfHook()
      if (!job) return
      await stopNodeAgent(job, await hookConfig()).catch((err: unknown) => {
        process.stderr.write(`p2prun slurm epilog: warning: ${formatError(err)}\n`)
      })
      process.exitCode = 0
    })
}

/** The spec the plugin passed (prolog/epilog see it as SPANK_P2PRUN_JOB); none: the job did not ask. */
function jobOfHook (): JobSpec | undefined {
  const raw = process.env[`SPANK_${JOB_ENV}`] ?? process.env[JOB_ENV]
  return raw ? decodeJob(raw) : undefined
}

/** Hooks get the plugin's settings as SPANK_P2PRUN_*: they count as P2PRUN_*. */
async function hookConfig (): Promise<Config> {
  const env = { ...process.env }
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('SPANK_P2PRUN_') && env[k.slice(6)] === undefined) env[k.slice(6)] = v
  return loadConfig({ flags: {}, env, cwd: '/' })
}

async function startDetachedHead (cli: readonly string[], libs: readonly string[], mountRoot: string | undefined): Promise<string> {
  const [file, ...args] = cli as [string, ...string[]]
  const child = spawn(file, [...args, 'head-daemon', ...libs.flatMap((l) => ['--libs', path.resolve(l)]),
    ...(mountRoot ? ['--mount-root', mountRoot] : []), '--notify-fd', '3'], {
    detached: true, // outlives sbatch; stopped by the job's epilog
    stdio: ['ignore', 'ignore', 'ignore', 'pipe']
  })
  let said = ''
  for await (const chunk of child.stdio[3] as NodeJS.ReadableStream) said += String(chunk)
  child.unref()
  if (said.startsWith('ok ')) return said.slice(3).trim()
  throw new P2prunError('LAUNCH', said.startsWith('error ') ? said.slice(6).trim() : 'the head exited before it was ready')
}

async function runHeadDaemon (libs: readonly string[], mountRoot: string | undefined, fd: number): Promise<void> {
  const notify = (line: string) => notifyFd(fd, line)
  const config = await loadConfig({ flags: {}, env: process.env, cwd: process.cwd() })
  // Which jobs are this head's: those sbatch submits from here in a moment (slurm-queue.ts).
  const jobs = new HeadJobs(new Date(), process.cwd(), config.slurmWatchMs)
  let head
  let job: JobSpec
  try {
    if (libs.length === 0) throw usageError('--p2plibs names no directory')
    const layout = layoutOf(libs)
    // P2PRUN_FOLLOW_SYMLINKS in sbatch's environment, or follow-symlinks: in a settings file.
    const desc = await describeLayout(layout, { followSymlinks: config.followSymlinks })
    const { startHead } = await import('../../lib/head.ts')
    const secret = newJobSecret()
    head = await startHead(desc, layout, config, advertisedHost(config),
      (line) => process.stderr.write(`p2prun slurm head: warning: ${line}\n`), secret,
      (jobId, stop) => { void jobs.ended(jobId).then((none) => { if (none) stop() }) })
    job = {
      launchId: SLURM_LAUNCH,
      infoHash: desc.infoHash,
      descriptionUrl: head.descriptionUrl,
      trackers: [head.trackerUrl],
      seeders: [head.seederAddress],
      mountPoint: `${mountRoot ?? desc.mountPoint}/%j-%n`,
      libDirs: layout.dirs.map((d) => d.name),
      mode: config.mode,
      stopUrl: head.stopUrl,
      secret: secret.toString('hex'),
      sources: layout.dirs
    }
  } catch (err) {
    await notify(`error ${formatError(err)}`)
    throw err
  }
  await notify(`ok ${encodeJob(job)}`)
  const watching = new AbortController()
  try {
    // An epilog asks it to stop; a job cancelled while pending runs none: the queue tells.
    await Promise.race([head.stopped, untilSignal(), jobs.untilGone(watching.signal)])
  } finally {
    watching.abort()
    await head.close()
  }
}

async function startNodeAgent (cli: readonly string[], job: JobSpec, config: Config): Promise<void> {
  const node = process.env.SLURMD_NODENAME ?? 'node'
  const launchId = `slurm-${process.env.SLURM_JOB_ID}`
  const stateDir = nodeStateDir(config.runDir, launchId, node)
  const uid = Number(process.env.SLURM_JOB_UID ?? process.getuid?.() ?? 0)
  const gid = Number(process.env.SLURM_JOB_GID ?? process.getgid?.() ?? 0)
  await mkdir(stateDir, { recursive: true, mode: 0o700 })
  await writeFile(path.join(stateDir, LOCK_FILE), '') // the job's ranks find this agent, never start one
  // The mount belongs to the job's user: the agent runs as that user (root only for root's jobs).
  await chown(stateDir, uid, gid)
  const log = await open(path.join(stateDir, 'agent.log'), 'a')
  await log.chown(uid, gid)
  const [file, ...args] = cli as [string, ...string[]]
  const agent = spawn(file, [...args, 'node-agent', stateDir, '--node', node, '--until-stopped', '--launch-id', launchId], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', [JOB_ENV]: encodeJob(job), P2PRUN_RUN_DIR: config.runDir, ...p2prunSettings() },
    ...(process.getuid?.() === 0 && uid !== 0 ? { uid, gid } : {})
  })
  await log.close()
  const exited = new Promise<never>((_, reject) => agent.once('exit', () => reject(new P2prunError('LAUNCH',
    `node ${node}: the p2prun agent exited before it was ready (log: ${path.join(stateDir, 'agent.log')})`))))
  agent.unref()
  await Promise.race([waitForAgent(stateDir, { name: node }, config.startTimeoutMs), exited])
}

function p2prunSettings (): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('SPANK_P2PRUN_') && k !== `SPANK_${JOB_ENV}` && v) out[k.slice(6)] = v
  return out
}

async function stopNodeAgent (job: JobSpec, config: Config): Promise<void> {
  const node = process.env.SLURMD_NODENAME ?? 'node'
  const stateDir = nodeStateDir(config.runDir, `slurm-${process.env.SLURM_JOB_ID}`, node)
  const ready = await readFile(path.join(stateDir, READY_FILE), 'utf8').then((t) => JSON.parse(t) as NodeReady, () => undefined)
  try {
    if (ready) {
      await terminate(ready.pid, EPILOG_WAIT_MS)
      const { isMounted, lazyUnmount } = await import('../../lib/mount.ts')
      if (await isMounted(ready.mountPoint)) await lazyUnmount(ready.mountPoint)
      await rm(ready.storePath, { recursive: true, force: true })
      await rmdir(ready.mountPoint).catch(() => {}) // the agent removes it when it made it; a dead agent cannot
    }
  } finally {
    await rm(stateDir, { recursive: true, force: true })
    // The first epilog of the job stops its head; later ones find it gone. An array's tasks share
    // one head, which stays while another of its jobs is queued (slurm-queue.ts).
    const jobId = process.env.SLURM_JOB_ID
    if (job.stopUrl) await fetch(`${job.stopUrl}${jobId ? `?job=${encodeURIComponent(jobId)}` : ''}`, { method: 'POST', signal: AbortSignal.timeout(5000) }).catch(() => {})
  }
}
