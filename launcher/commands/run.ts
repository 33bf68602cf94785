// `p2prun [options] [launcher options] PROGRAM [ARGS…]`: what users type instead of mpirun/srun.
// Describes the libraries, starts the tracker and seeder here (or uses --seeder's), launches through
// the real launcher with a p2prun step before the program on every rank, and stops everything when
// the launcher returns — with its exit code.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { realpathSync } from 'node:fs'
import path from 'node:path'
import { remoteKindOf } from '../../lib/file-systems.ts'
import { access, constants } from 'node:fs/promises'
import { constants as osConstants } from 'node:os'
import { AUTO_LIBS, loadConfig, type Config } from '../../lib/config.ts'
import { isExecutable, programCandidates } from '../../lib/files.ts'
import { formatBytes, peerShareable, type Description } from '../../lib/description.ts'
import { networkReason, P2prunError, usageError } from '../../lib/errors.ts'
import type { Head } from '../../lib/head.ts'
import { decodeJob, encodeJob, JOB_ENV, JOB_SPEC_VERSION, launchEnvironment, nodeSettings, SLURM_LAUNCH, type JobSpec } from '../../lib/session/job-spec.ts'
import { NodeState } from '../../lib/session/node-state.ts'
import { newJobSecret, secretFromEnv, withProof, type JobSecret } from '../../lib/swarm/job-auth.ts'
import { ANY_LAUNCHER_VALUES, chooseLauncher, type ChosenLauncher } from '../launchers/index.ts'
import { splitRunArgs, type RunArgs } from '../run-args.ts'
import { formatChoices, launchSet } from '../launch-set.ts'
import type { SourceLayout } from '../../lib/source-layout.ts'

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
const LOCAL_CLEANUP_WAIT_MS = 15_000
const PROGRESS_MS = 500

/**
 * `cli` is how ranks and agents call p2prun, and `rankStep` the per-rank wrapper: the same
 * installation, by absolute path, on every node.
 */
export async function runLaunch (argv: readonly string[], cli: readonly string[], rankStep: string): Promise<void> {
  const env = process.env
  // The launcher (one of the settings) decides which option table splits the command line, so
  // p2prun's own options are first found with every launcher's table; settings load once, from those.
  const peek = splitRunArgs(argv, ANY_LAUNCHER_VALUES).options
  const config = await loadConfig({ flags: peek.settings, env, cwd: process.cwd(), configFile: peek.config })
  const launcher = await chooseLauncher(config.launcher, env, cli)
  const args = splitRunArgs(argv, launcher.adapter.valueOptions)
  if (JSON.stringify(args.options) !== JSON.stringify(peek)) {
    // Only where another launcher's option took a value this one does not: p2prun's options came after it.
    throw usageError(`p2prun's options read differently with ${launcher.adapter.name}'s options`, 'put p2prun\'s options first, before the launcher\'s')
  }
  const given = args.options.libs.length > 0 ? args.options.libs : (config.libs ?? [])
  const slurmJob = jobOfAllocation(env)
  if (slurmJob && args.options.libs.length === 0) {
    // Inside a --p2plibs allocation: the prolog's agents already serve the job's libraries.
    await checkProgram(args.program[0] as string, env)
    return launchOnExistingAgents(slurmJob, launcher, args, rankStep, config)
  }
  await checkProgram(args.program[0] as string, env)
  const { desc, layout, placement, choices, warnings } = await launchSet(given.length > 0 ? given : [AUTO_LIBS], args.program[0] as string,
    config.libsPolicy, { env, cwd: process.cwd(), describe: { mountPoint: args.options.mountPoint, followSymlinks: config.followSymlinks } })
  if (!config.quiet) for (const line of warnings) process.stderr.write(`p2prun: warning: ${line}\n`)
  const launchId = randomBytes(4).toString('hex')
  const step = [rankStep, ...args.program]
  if (args.options.dryRun) {
    const { launchEnv, forward } = launchEnvironment(env, '<set at launch>')
    const command = launcher.adapter.command(launcher.program, args.launcherArgs, forward, step, launchEnv)
    // What the closure held and why, as shell comments: the output stays a command one can paste.
    for (const line of formatChoices(choices)) process.stdout.write(`# ${line}\n`)
    process.stdout.write(`${JOB_ENV}='<set at launch>' ${command.map(shellQuote).join(' ')}\n`)
    return
  }

  const say = (line: string) => { if (!config.quiet) process.stderr.write(`${line}\n`) }
  warnIfInstalledRemotely(cli[0] as string, say)
  const started = performance.now()
  const head = await headFor(args, desc, layout, config)
  try {
    const job: JobSpec = {
      version: JOB_SPEC_VERSION,
      launchId,
      infoHash: desc.infoHash,
      descriptionUrl: head.descriptionUrl,
      trackers: [head.trackerUrl],
      seeders: head.seederAddress ? [head.seederAddress] : [],
      mountPoint: args.options.mountPoint ?? `${desc.mountPoint}/%j-%n`,
      ...placement,
      node: nodeSettings(config),
      sources: layout.dirs,
      ...(head.secret ? { secret: head.secret.toString('hex') } : {})
    }
    const { launchEnv, forward } = launchEnvironment(env, encodeJob(job))
    const [program, ...launchArgs] = launcher.adapter.command(launcher.program, args.launcherArgs, forward, step, launchEnv) as [string, ...string[]]
    const progress = process.stderr.isTTY && !config.quiet ? showProgress(head, desc) : undefined
    const code = await runLauncher(program, launchArgs, launchEnv)
    clearInterval(progress)
    if (progress) process.stderr.write('\r\x1b[K')
    // Agents of this launch on this host remove their state once unmounted: when p2prun returns, no
    // mount of it is left here. Remote nodes' agents finish on their own.
    await NodeState.launchGone(config.runDir, launchId, LOCAL_CLEANUP_WAIT_MS)
    if (args.options.stats) say(summary(head, desc, (performance.now() - started) / 1000))
    process.exitCode = code
  } finally {
    await head.close()
  }
}

/**
 * Every rank runs p2prun's Node (the rank step) from its installation: on a network file system
 * that is the read storm p2prun exists to avoid, once more per rank.
 */
function warnIfInstalledRemotely (cliPath: string, say: (line: string) => void): void {
  const installation = path.dirname(path.dirname(realpathSync(cliPath)))
  const kind = remoteKindOf(installation)
  if (kind) say(`p2prun: warning: p2prun is installed on ${kind} (${installation}): every rank starts Node from there (hint: install it on node-local storage, scripts/install.sh --prefix)`)
}

/** The job spec of a Slurm allocation made with --p2plibs, if this runs inside one. */
function jobOfAllocation (env: NodeJS.ProcessEnv): JobSpec | undefined {
  const raw = env.SLURM_JOB_ID ? env[JOB_ENV] ?? env[`SLURM_SPANK_${JOB_ENV}`] : undefined
  if (!raw) return undefined
  const job = decodeJob(raw)
  return job.launchId === SLURM_LAUNCH ? job : undefined
}

async function launchOnExistingAgents (job: JobSpec, launcher: ChosenLauncher, args: RunArgs, rankStep: string, config: Config): Promise<void> {
  const { launchEnv, forward } = launchEnvironment(process.env, encodeJob(job))
  const [program, ...launchArgs] = launcher.adapter.command(launcher.program, args.launcherArgs, forward, [rankStep, ...args.program], launchEnv) as [string, ...string[]]
  if (args.options.dryRun) {
    process.stdout.write(`${[program, ...launchArgs].map(shellQuote).join(' ')}\n`)
    return
  }
  if (!config.quiet) process.stderr.write('p2prun: using the libraries this allocation mounted (--p2plibs)\n')
  process.exitCode = await runLauncher(program, launchArgs, launchEnv)
}

async function checkProgram (name: string, env: NodeJS.ProcessEnv): Promise<void> {
  for (const c of programCandidates(name, env)) {
    if (await access(c, constants.F_OK).then(() => true, () => false)) {
      if (await isExecutable(c)) return
      throw usageError(`program ${name} is not executable`, `chmod +x ${name}`)
    }
  }
  throw usageError(`program ${name} not found`, name.includes('/') ? 'check the path' : 'give its path, or put it on PATH')
}

type HeadLike = Pick<Head, 'trackerUrl' | 'descriptionUrl' | 'uploaded' | 'maxToOneNode' | 'descriptionBytes' | 'peerCount' | 'completions' | 'close'> &
  { seederAddress?: string, secret?: JobSecret }

/**
 * Our own tracker and seeder, with a secret made for this job; or the ones already running at
 * --seeder (an I/O node's `p2prun serve`), with the secret it was started with (P2PRUN_SECRET).
 */
async function headFor (args: RunArgs, desc: Description, layout: SourceLayout, config: Config): Promise<HeadLike> {
  const external = args.options.seeder
  if (!external) {
    const { startHead } = await import('../../lib/head.ts')
    const secret = newJobSecret()
    const head = await startHead(desc, layout, config,
      (line) => process.stderr.write(`p2prun: warning: ${line}\n`), secret)
    return Object.assign(head, { secret })
  }
  const secret = secretFromEnv(process.env)
  const trackerUrl = external.endsWith('/announce') ? external : `${external.replace(/\/$/, '')}/announce`
  const descriptionUrl = trackerUrl.replace(/\/announce$/, `/p2prun/${desc.infoHash}.torrent`)
  const res = await fetch(withProof(descriptionUrl, secret, 'description', Buffer.from(desc.infoHash, 'hex')),
    { signal: AbortSignal.timeout(10_000) }).catch((err: unknown) => {
    throw new P2prunError('LAUNCH', `the seeder at ${external} is unreachable: ${networkReason(err)}`,
      { hint: 'start it with `p2prun serve FILE --source DIR` on the I/O node, or leave out --seeder' })
  })
  if (res.status === 403) {
    throw new P2prunError('LAUNCH', `the seeder at ${external} serves only its job's nodes, and ${secret ? 'this P2PRUN_SECRET is not its secret' : 'P2PRUN_SECRET is not set'}`,
      { hint: 'export the P2PRUN_SECRET that `p2prun serve` was started with' })
  }
  if (!res.ok) {
    throw new P2prunError('LAUNCH', `the seeder at ${external} does not serve these libraries (infohash ${desc.infoHash})`,
      { hint: 'serve a description of the same directory there' })
  }
  const none = () => 0
  return { trackerUrl, descriptionUrl, secret, uploaded: none, maxToOneNode: none, descriptionBytes: none, peerCount: none, completions: () => [], close: async () => {} }
}

/** Runs the launcher in the foreground; signals go to it (it stops the ranks); its exit code is ours. */
function runLauncher (program: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: 'inherit', env })
    const forward = (sig: NodeJS.Signals) => { child.kill(sig) }
    for (const sig of STOP_SIGNALS) process.on(sig, forward)
    child.on('error', (err) => reject(new P2prunError('LAUNCH', `cannot start ${program}: ${err.message}`)))
    child.on('exit', (code, signal) => {
      for (const sig of STOP_SIGNALS) process.off(sig, forward)
      resolve(code ?? 128 + (signal ? osConstants.signals[signal] : 0))
    })
  })
}

function showProgress (head: HeadLike, desc: Description): NodeJS.Timeout {
  return setInterval(() => {
    const up = head.uploaded()
    process.stderr.write(`\r\x1b[Kp2prun: ${head.completions().length}/${head.peerCount()} nodes have the set; ` +
      `head sent ${formatBytes(up)} (${(up / desc.totalBytes).toFixed(2)}x the ${formatBytes(desc.totalBytes)} set)`)
  }, PROGRESS_MS).unref()
}

function summary (head: HeadLike, desc: Description, seconds: number): string {
  const up = head.uploaded()
  const done = head.completions()
  const allReady = done.length > 0 ? `${(Math.max(...done) / 1000).toFixed(2)} s` : 'n/a'
  return `p2prun: ${done.length} node${done.length === 1 ? '' : 's'} had the whole set, the last after ${allReady}; head sent ${formatBytes(up)} ` +
    `= ${(up / desc.totalBytes).toFixed(2)}x the ${formatBytes(desc.totalBytes)} set, at most ${formatBytes(head.maxToOneNode())} to one node, ` +
    `and ${formatBytes(head.descriptionBytes())} of descriptions = ${(head.descriptionBytes() / peerShareable(desc).length).toFixed(2)}x one; launch took ${seconds.toFixed(2)} s`
}

function shellQuote (word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`
}
