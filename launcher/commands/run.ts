// `p2prun [options] [launcher options] PROGRAM [ARGS…]`: what users type instead of mpirun/srun.
// Describes the libraries, starts the tracker and seeder here (or uses --seeder's), launches through
// the real launcher with a p2prun step before the program on every rank, and stops everything when
// the launcher returns — with its exit code.
import { randomBytes } from 'node:crypto'
import { realpathSync } from 'node:fs'
import path from 'node:path'
import { remoteKindOf } from '../../lib/file-systems.ts'
import { loadConfig, type Config } from '../../lib/config.ts'
import { checkProgram } from '../../lib/files.ts'
import { formatBytes, peerShareable, type Description } from '../../lib/description.ts'
import { usageError } from '../../lib/errors.ts'
import { jobSpecOf, launchHead, mountPointOf, type LaunchHead, type Placement } from '../../lib/session/head.ts'
import { encodeJob, JOB_ENV, jobOfAllocation, launchEnvironment, NODE_PER_RANK_ENV, type JobSpec } from '../../lib/session/job-spec.ts'
import { compressHostlist, isLoopback } from '../../lib/session/launch-nodes.ts'
import { NodeState } from '../../lib/session/node-state.ts'
import { runForeground } from '../../lib/session/process.ts'
import { ANY_LAUNCHER_VALUES, chooseLauncher, type ChosenLauncher } from '../launchers/index.ts'
import type { SourceLayout } from '../../lib/source-layout.ts'
import { shellQuote } from '../cli-support.ts'
import { libsToServe, setOptionsOf, splitRunArgs, type RunArgs } from '../run-args.ts'
import { formatChoices, launchSet } from '../../lib/session/launch-set.ts'

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
  const slurmJob = jobOfAllocation(env)
  if (slurmJob && args.options.libs.length === 0) {
    // Inside a --p2plibs allocation: the prolog's agents already serve the job's libraries.
    await checkProgram(args.program[0] as string, env)
    return launchOnExistingAgents(slurmJob, launcher, args, rankStep, config)
  }
  await checkProgram(args.program[0] as string, env)
  const nodeNames = await launchNodes(config, launcher, args, env)
  const { desc, layout, placement, choices, warnings } = await launchSet(libsToServe(args.options, config.libs), args.program[0] as string,
    config.libsPolicy, { env, cwd: process.cwd(), describe: { mountPoint: args.options.mountPoint, followSymlinks: config.followSymlinks } })
  if (!config.quiet) for (const line of warnings) process.stderr.write(`p2prun: warning: ${line}\n`)
  const launchId = randomBytes(4).toString('hex')
  const step = [rankStep, ...args.program]
  if (args.options.dryRun) {
    // What the closure held and why, as shell comments: the output stays commands one can paste.
    for (const line of formatChoices(choices)) process.stdout.write(`# ${line}\n`)
    process.stdout.write(await launchByHand(args, launcher, cli, step, { desc, layout, placement, config, launchId, nodeNames }))
    return
  }

  const say = (line: string) => { if (!config.quiet) process.stderr.write(`${line}\n`) }
  warnIfInstalledRemotely(cli[0] as string, say)
  const started = performance.now()
  const head = await launchHead(desc, layout, config, args.options.seeder, (line) => process.stderr.write(`p2prun: warning: ${line}\n`))
  try {
    const job = jobSpecOf(head, desc, layout, config, { launchId, mountPoint: mountPointOf(desc, args.options.mountPoint), placement, inline: true, nodeNames })
    const { launchEnv, forward } = launchEnvironment(env, encodeJob(job))
    const [program, ...launchArgs] = launcher.adapter.command(launcher.program, args.launcherArgs, forward, step, launchEnv) as [string, ...string[]]
    const progress = process.stderr.isTTY && !config.quiet ? showProgress(head, desc, config.discovery === 'nodes') : undefined
    const code = await runForeground(program, launchArgs, launchEnv)
    clearInterval(progress)
    if (progress) process.stderr.write('\r\x1b[K')
    // Agents of this launch on this host remove their state once unmounted: when p2prun returns, no
    // mount of it is left here. Remote nodes' agents finish on their own.
    await NodeState.launchGone(config.runDir, launchId, LOCAL_CLEANUP_WAIT_MS)
    if (args.options.stats) {
      const seconds = (performance.now() - started) / 1000
      await head.refresh()
      say(summary(head, desc, seconds, config.discovery === 'nodes'))
    }
    process.exitCode = code
  } finally {
    await head.close()
  }
}

/** Stands for the spec in the launcher's command until the shell gives it: "$P2PRUN_JOB". */
const JOB_IN_SHELL = '\0job'

/**
 * The launch as shell commands that do it, for --dry-run: the head started detached by `p2prun
 * head` (P2PRUN_JOB set in the shell by eval), the launcher's own command, the head stopped once
 * this host's agents have left. With --seeder the head is running: the spec itself, then the command.
 */
async function launchByHand (args: RunArgs, launcher: ChosenLauncher, cli: readonly string[], step: readonly string[],
  set: { readonly desc: Description, readonly layout: SourceLayout, readonly placement: Placement, readonly config: Config, readonly launchId: string, readonly nodeNames: string | undefined }): Promise<string> {
  const { launchEnv, forward } = launchEnvironment(process.env, JOB_IN_SHELL)
  const command = launcher.adapter.command(launcher.program, args.launcherArgs, forward, step, launchEnv)
  const line = (words: readonly string[]) => `${words.map((w) => (w === JOB_IN_SHELL ? `"$${JOB_ENV}"` : shellQuote(w))).join(' ')}\n`
  if (args.options.seeder === undefined) {
    const start = line([...cli, 'head', ...setOptionsOf(args.options), args.program[0] as string])
    return `eval "$(${start.trimEnd()})"\n${line(command)}${line([...cli, 'head', '--stop'])}`
  }
  const head = await launchHead(set.desc, set.layout, set.config, args.options.seeder, (l) => process.stderr.write(`p2prun: warning: ${l}\n`))
  const job = jobSpecOf(head, set.desc, set.layout, set.config,
    { launchId: set.launchId, mountPoint: mountPointOf(set.desc, args.options.mountPoint), placement: set.placement, inline: true, nodeNames: set.nodeNames })
  return `${JOB_ENV}=${shellQuote(encodeJob(job))}; export ${JOB_ENV}\n${line(command)}`
}

/**
 * With --discovery nodes, the hosts the launcher may use (a hostlist for the spec), read (and a
 * launch that cannot have them refused) before the set is described and any head starts; undefined
 * where each node reads its launch's nodes itself (srun's steps).
 */
async function launchNodes (config: Config, launcher: ChosenLauncher, args: RunArgs, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  if (config.discovery !== 'nodes') return undefined
  if (args.options.dryRun && args.options.seeder === undefined) {
    throw usageError('--dry-run starts the head with `p2prun head`, which cannot know the launch\'s nodes for --discovery nodes',
      'give --seeder URL of a running `p2prun serve` (the dry run then prints the spec itself), or use --discovery tracker')
  }
  if (!launcher.adapter.hosts) return undefined
  if (env[NODE_PER_RANK_ENV] === '1') {
    throw usageError(`--discovery nodes lists the launch's hosts, and ${NODE_PER_RANK_ENV}=1 makes each rank a node of its own`, `unset ${NODE_PER_RANK_ENV}, or use --discovery tracker`)
  }
  const hosts = await launcher.adapter.hosts(args.launcherArgs, env, process.cwd())
  // Node K is reached at its name (%n): "localhost" among other hosts names each node itself.
  const loopback = hosts.find(isLoopback)
  if (hosts.length > 1 && loopback !== undefined && config.nodeHost.includes('%n')) {
    throw usageError(`--discovery nodes: the launcher's hosts name ${loopback} among others, where the other nodes cannot reach it`,
      'name that host by its host name or address in -H or the hostfile')
  }
  return compressHostlist(hosts)
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

async function launchOnExistingAgents (job: JobSpec, launcher: ChosenLauncher, args: RunArgs, rankStep: string, config: Config): Promise<void> {
  const { launchEnv, forward } = launchEnvironment(process.env, encodeJob(job))
  const [program, ...launchArgs] = launcher.adapter.command(launcher.program, args.launcherArgs, forward, [rankStep, ...args.program], launchEnv) as [string, ...string[]]
  if (args.options.dryRun) {
    process.stdout.write(`${[program, ...launchArgs].map(shellQuote).join(' ')}\n`)
    return
  }
  if (!config.quiet) process.stderr.write('p2prun: using the libraries this allocation mounted (--p2plibs)\n')
  process.exitCode = await runForeground(program, launchArgs, launchEnv)
}

function showProgress (head: LaunchHead, desc: Description, byNodeList: boolean): NodeJS.Timeout {
  return setInterval(() => {
    const up = head.uploaded()
    const nodes = byNodeList ? 'peers from the node list' : head.dhtAddress ? `${head.peerCount()} nodes in the DHT` : `${head.completions().length}/${head.peerCount()} nodes have the set`
    process.stderr.write(`\r\x1b[Kp2prun: ${nodes}; ` +
      `head sent ${formatBytes(up)} (${(up / desc.totalBytes).toFixed(2)}x the ${formatBytes(desc.totalBytes)} set)`)
  }, PROGRESS_MS).unref()
}

function summary (head: LaunchHead, desc: Description, seconds: number, byNodeList: boolean): string {
  const up = head.uploaded()
  const done = head.completions()
  const allReady = done.length > 0 ? `${(Math.max(...done) / 1000).toFixed(2)} s` : 'n/a'
  // Completions are what nodes tell the tracker; with a DHT they tell none, only that they joined,
  // and with a node list nothing at all.
  const nodes = byNodeList
    ? 'the nodes took their peers from the node list'
    : head.dhtAddress
      ? `${plural(head.peerCount(), 'node')} announced in the head's DHT node`
      : `${plural(done.length, 'node')} had the whole set, the last after ${allReady}`
  return `p2prun: ${nodes}; head sent ${formatBytes(up)} ` +
    `= ${(up / desc.totalBytes).toFixed(2)}x the ${formatBytes(desc.totalBytes)} set, at most ${formatBytes(head.maxToOneNode())} to one node, ` +
    `and ${formatBytes(head.descriptionBytes())} of descriptions = ${(head.descriptionBytes() / peerShareable(desc).length).toFixed(2)}x one; launch took ${seconds.toFixed(2)} s`
}

function plural (n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`
}
