// `p2prun head`: a launch's head, detached, for running the launcher by hand (what --dry-run prints):
//   eval "$(p2prun head --libs ./libs ./app)"    describe, start the tracker and seeder; P2PRUN_JOB in this shell
//   mpirun -n 4 -x P2PRUN_JOB .../p2prun-rank ./app
//   p2prun head --stop                           once this host's agents of the launch have left, stop it
// The launcher's command can run any number of times in between, each run its own nodes' agents.
// `p2prun head-daemon` (hidden) is the head itself, for this and for Slurm jobs (detached-head.ts).
import { connect } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { Option, type Command } from 'commander'
import { loadConfig } from '../../lib/config.ts'
import { networkReason, P2prunError, usageError } from '../../lib/errors.ts'
import { checkProgram } from '../../lib/files.ts'
import { parseHeadRequest, runHeadDaemon, startDetachedHead } from '../../lib/session/detached-head.ts'
import { decodeJob, JOB_ENV, launchIdOf } from '../../lib/session/job-spec.ts'
import { NodeState } from '../../lib/session/node-state.ts'
import { action, notifyFd, shellQuote, untilSignal } from '../cli-support.ts'
import { libsToServe, splitRunArgs } from '../run-args.ts'

/** As long as a launch waits for this host's agents to leave once the launcher returned. */
const AGENTS_GONE_WAIT_MS = 15_000
const HEAD_CLOSE_WAIT_MS = 5_000
const CLOSE_POLL_MS = 50

export function registerHead (program: Command, cli: readonly string[]): void {
  program.command('head')
    .description('start a detached tracker + seeder for a launch run by hand and print P2PRUN_JOB for the shell (eval "$(p2prun head [options] PROGRAM)"), or stop it (--stop)')
    .usage('[p2prun options] PROGRAM  |  p2prun head --stop')
    .argument('[launch...]', 'p2prun\'s own launch options (--libs, --mode, --mount-point…) and the program')
    .option('--stop', 'stop the head P2PRUN_JOB names, once this host\'s agents of its launch have left')
    .allowUnknownOption()
    .action(action('head', async (_launch: string[], opts: { stop?: boolean }, cmd: Command) => {
      if (opts.stop) {
        if (cmd.args.length > 0) throw usageError(`--stop takes nothing more, got ${cmd.args[0]}`, 'p2prun head --stop')
        return stopHead(process.env)
      }
      process.stdout.write(`${JOB_ENV}=${shellQuote(await startHead(cli, cmd.args))}; export ${JOB_ENV}\n`)
    }))

  program.command('head-daemon', { hidden: true })
    .description('(internal) a detached head: a Slurm job\'s, or one `p2prun head` started')
    .requiredOption('--request <json>', 'what to serve, from its starter')
    .addOption(new Option('--notify-fd <fd>').hideHelp())
    .action(action('head-daemon', async (opts: { request: string, notifyFd?: string }) => {
      await runHeadDaemon(parseHeadRequest(opts.request), (line) => notifyFd(Number(opts.notifyFd ?? 3), line), untilSignal())
    }))
}

async function startHead (cli: readonly string[], argv: readonly string[]): Promise<string> {
  const { options, launcherArgs, program } = splitRunArgs(argv, new Map())
  if (launcherArgs.length > 0) throw usageError(`p2prun head takes p2prun's own options, not ${launcherArgs[0]}`, 'give the launcher\'s options to its own command')
  if (options.seeder !== undefined) throw usageError('with --seeder the head is already running', 'p2prun --dry-run --seeder URL … prints the job spec to use')
  if (options.dryRun || options.stats) throw usageError(`${options.dryRun ? '--dry-run' : '--stats'} is a launch's option`, 'leave it out')
  const env = process.env
  // Read here as the head will read them: a bad setting fails now, with nothing started.
  const config = await loadConfig({ flags: options.settings, env, cwd: process.cwd(), configFile: options.config })
  await checkProgram(program[0] as string, env)
  return startDetachedHead(cli, {
    libs: libsToServe(options, config.libs),
    program: program[0] as string,
    ...(options.mountPoint !== undefined ? { mountPoint: options.mountPoint } : {}),
    slurm: false,
    settings: options.settings,
    ...(options.config !== undefined ? { configFile: options.config } : {})
  })
}

async function stopHead (env: NodeJS.ProcessEnv): Promise<void> {
  if (!env[JOB_ENV]) throw usageError(`${JOB_ENV} is not set: no head to stop`, 'run --stop in the shell that ran eval "$(p2prun head …)"')
  const job = decodeJob(env[JOB_ENV])
  if (!job.stopUrl) throw usageError(`${JOB_ENV} names a head that p2prun head did not start`, 'stop it where it was started')
  const stopUrl = new URL(job.stopUrl)
  await NodeState.launchGone(job.node.runDir, launchIdOf(job, env), AGENTS_GONE_WAIT_MS)
  const res = await fetch(stopUrl, { method: 'POST', signal: AbortSignal.timeout(5000) }).catch((err: unknown) => {
    throw new P2prunError('LAUNCH', `the head at ${stopUrl.host} is unreachable: ${networkReason(err)}`, { hint: 'it has stopped already, or its host is down' })
  })
  if (!res.ok) throw new P2prunError('LAUNCH', `the head at ${stopUrl.host} refused to stop (HTTP ${res.status})`, { hint: `is ${JOB_ENV} the one p2prun head printed?` })
  // It answers, then closes its sockets: once that is done, a script's next launch may take its ports.
  if (!(await closedWithin(stopUrl, HEAD_CLOSE_WAIT_MS))) throw new P2prunError('LAUNCH', `the head at ${stopUrl.host} still serves ${HEAD_CLOSE_WAIT_MS / 1000} s after it was asked to stop`)
}

/** Whether nothing listens at `url`'s address any more, looking again every CLOSE_POLL_MS until `timeoutMs`. */
async function closedWithin ({ hostname, port }: URL, timeoutMs: number): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await delay(CLOSE_POLL_MS)) {
    const listening = await new Promise<boolean>((resolve) => {
      const socket = connect({ host: hostname.replace(/^\[|\]$/g, ''), port: Number(port) }, () => { socket.destroy(); resolve(true) })
      socket.on('error', () => resolve(false))
    })
    if (!listening) return true
  }
  return false
}
