// p2prun: `p2prun [options] PROGRAM` launches a job (like mpirun/srun); the subcommands are the
// steps of a launch, usable on their own. Only the running command's module is imported, and heavy
// modules (the swarm, the FUSE server) only by the commands that need them, so the per-rank step and
// the node agent start fast.
import module from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command, CommanderError } from 'commander'
import { quote, usageError } from '../lib/errors.ts'
import { VERSION } from '../lib/version.ts'
import { envNameOf, SETTINGS, SITE_CONFIG_FILE, type SettingName } from '../lib/config.ts'
import { KEPT_AGENT_LOGS } from '../lib/session/node-state.ts'
import { fromBundle, saveCodeCache } from './bundle.ts'
import { reportError } from './cli-support.ts'
import { setUpV8 } from './v8-setup.ts'

// From the bundle, its loader did this before compiling it.
if (!fromBundle) setUpV8(process.argv[2])

/** Ranks, agents and the local launcher call this same installation by its absolute path. */
const BIN = path.join(path.dirname(path.dirname(fileURLToPath(import.meta.url))), 'bin')
const CLI = [path.join(BIN, 'p2prun')]

const program = new Command('p2prun')
  .usage('[options] [launcher options] PROGRAM [ARGS...]  |  p2prun COMMAND ...')
  .description('Launch an MPI/Slurm job whose shared libraries load peer-to-peer from a BitTorrent-backed FUSE mount.\n\n' +
    'Launch options: --libs DIR|auto (repeatable; default auto: what the program loads), ' +
    '--libs-policy network|nonsystem|all, --launcher auto|local|openmpi|mpich|srun, --seeder URL, ' +
    '--mode block|file|eager, --discovery tracker|dht|nodes, --node-host TEMPLATE, --node-port PORT, --mount-point TEMPLATE, --follow-symlinks, --config FILE, --dry-run, --quiet, --stats. ' +
    'Every other option goes to the launcher unchanged; "--" ends p2prun\'s options.\n\n' +
    'Example: p2prun -n 4 ./app')
  .addHelpText('after', settingsHelp)
  .version(VERSION)
  .option('--config <file>', 'YAML settings file (default: ./p2prun.yaml if present)')
  .configureHelp({ sortSubcommands: false })
  // Commander's own errors (unknown option, missing argument…) are usage errors: instead of its
  // message and exit code 1, p2prun's one line and exit code 2, below. Commands inherit this.
  .exitOverride()
  .configureOutput({ outputError: () => {} })

/** Every setting, as the variable that sets it: flags win over variables, variables over the files. */
function settingsHelp (): string {
  const rows: [string, string][] = [
    ...(Object.keys(SETTINGS) as SettingName[]).map((n): [string, string] => [envNameOf(n), SETTINGS[n].help]),
    ['P2PRUN_SECRET', 'the job\'s secret (hex), for `p2prun serve` and --seeder'],
    ['P2PRUN_CONFIG', 'the user\'s settings file (like --config)'],
    ['P2PRUN_SITE_CONFIG', `the site's settings file (default ${SITE_CONFIG_FILE})`],
    ['P2PRUN_NODE_PER_RANK', '1: every rank is its own node (to emulate nodes on one host)'],
    ['P2PRUN_DEBUG', `1: errors print their stack, and node agents keep their logs (${KEPT_AGENT_LOGS}); 2: agents also log the description's route and their counters every 5 s`]
  ]
  const width = Math.max(...rows.map(([name]) => name.length))
  return '\nSettings (each also --NAME on the commands that take it, and NAME: in a settings file; flags ' +
    'win over variables, variables over the user\'s file, the user\'s file over the site\'s):\n' +
    rows.map(([name, help]) => `  ${name.padEnd(width)}  ${help}`).join('\n') + '\n'
}

// Each command's module, imported only when that command runs (or for the full help): every rank
// runs `rank-prepare` and every node an agent, so their start-up should not pay for the others'.
type Register = (program: Command) => void
const COMMANDS: Record<string, () => Promise<Register>> = {
  describe: async () => (await import('./commands/describe.ts')).registerDescribe,
  inspect: async () => (await import('./commands/describe.ts')).registerInspect,
  serve: async () => (await import('./commands/serve.ts')).registerServe,
  fetch: async () => (await import('./commands/fetch.ts')).registerFetch,
  mount: async () => (await import('./commands/mount.ts')).registerMount,
  'rank-prepare': async () => { const m = await import('./commands/rank.ts'); return (p) => m.registerRank(p, CLI) },
  'node-agent': async () => (await import('./commands/node-agent.ts')).registerNodeAgent,
  'local-ranks': async () => (await import('./commands/local-ranks.ts')).registerLocalRanks,
  head: async () => { const m = await import('./commands/head.ts'); return (p) => m.registerHead(p, CLI) },
  slurm: async () => { const m = await import('./commands/slurm.ts'); return (p) => m.registerSlurm(p, CLI) }
}
// Registered by the module of another command.
const ALIASES: Record<string, string> = { umount: 'mount', 'head-daemon': 'head' }

const first = process.argv[2]
const command = first === undefined ? undefined : (ALIASES[first] ?? (first in COMMANDS ? first : undefined))
/** A command ran to its end (not the help, the version, a usage error or a failure): its code is worth caching. */
let ran = false
if (first === 'help') {
  // `p2prun help [COMMAND]`, as git and commander's users expect: nobody means a program named help.
  // `help run` (and `help` alone) is the launch's own usage, the top-level help.
  const topic = process.argv[3]
  const name = topic === undefined || topic === 'run' ? undefined : (ALIASES[topic] ?? (topic in COMMANDS ? topic : undefined))
  if (topic !== undefined && topic !== 'run' && name === undefined) {
    reportError('p2prun help', usageError(`no command ${quote(topic)}`, 'see `p2prun --help` for the commands'))
  } else {
    for (const each of name === undefined ? Object.keys(COMMANDS) : [name]) (await COMMANDS[each]!())(program)
    const sub = name === undefined ? undefined : program.commands.find((c) => c.name() === topic)
    ;(sub ?? program).outputHelp()
  }
} else if (first === undefined || command !== undefined || ['-h', '--help', '-V', '--version'].includes(first)) {
  const wanted = command === undefined ? Object.keys(COMMANDS) : [command]
  for (const name of wanted) (await COMMANDS[name]!())(program)
  try {
    await program.parseAsync(process.argv)
    ran = true
  } catch (err) {
    // Thrown where commander would have exited: with 0 once it printed the help or the version;
    // 'commander.help' once it printed the help for a missing command; else with its error message.
    if (!(err instanceof CommanderError)) throw err
    if (err.exitCode !== 0) {
      const who = command === undefined ? 'p2prun' : `p2prun ${first}`
      if (err.code === 'commander.help') process.exitCode = 2
      else reportError(who, usageError(err.message.replace(/^error: /, ''), `see \`${who} --help\``))
    }
  }
} else {
  try {
    const { runLaunch } = await import('./commands/run.ts')
    await runLaunch(process.argv.slice(2), CLI, path.join(BIN, 'p2prun-rank'))
    ran = true
  } catch (err) {
    reportError('p2prun', err)
  }
}
// A command is done when its action returns; sockets a swarm client may still be closing (a last
// "stopped" announce to an unreachable tracker) must not keep the process alive. Every command
// leaves past Node's own teardown, which can deadlock in Node 24 (the main thread joining a V8
// worker that waits on it: seen after long-lived agents, and in CI, with Maglev already off, a
// `p2prun describe` that never ended): _exit (native/process-exit.c). The output is written by
// then: stdout and stderr are synchronous on Linux (files, pipes, terminals). Node writes its
// compile cache (bin/p2prun) in that teardown, so it is flushed first: a no-op once it is warm; and
// the bundle's code cache (bundle.ts) is saved here, once a command ran and compiled what it runs.
// A profiler (--cpu-prof, --heap-prof, --prof) writes its output in that teardown: then it runs.
const code = typeof process.exitCode === 'number' ? process.exitCode : 0
if (ran && code === 0) saveCodeCache()
const profiled = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => /^--(cpu-prof|heap-prof|prof)\b/.test(a))
if (!profiled) {
  module.flushCompileCache()
  ;(await import('../lib/native.ts')).native?.exitNow(code)
}
process.exit(code)
