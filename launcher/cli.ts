// p2prun: `p2prun [options] PROGRAM` launches a job (like mpirun/srun); the subcommands are the
// steps of a launch, usable on their own. Only the running command's module is imported, and heavy
// modules (the swarm, the FUSE server) only by the commands that need them, so the per-rank step and
// the node agent start fast.
import module from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'
import { Command, CommanderError } from 'commander'
import { quote, usageError } from '../lib/errors.ts'
import { VERSION } from '../lib/version.ts'
import { envNameOf, SETTINGS, SITE_CONFIG_FILE, type SettingName } from '../lib/config.ts'
import { KEPT_AGENT_LOGS } from '../lib/session/node-state.ts'
import { reportError } from './cli-support.ts'

// Node 24 can deadlock at exit: the main thread joins V8's worker threads while a background Maglev
// compile waits for a garbage collection only the main thread can run (nodejs/node#54918; seen in
// CI: `p2prun describe` wrote its output, then hung in process.exit). Without Maglev, V8 tiers up
// from Sparkplug straight to TurboFan, which does not allocate on the heap off the main thread.
// Any V8 flag set also makes V8 refuse the compiled code Node ships for its built-in modules (made
// with the default flags): each built-in loaded after this line is compiled from source. So the
// ones the long-lived commands load later (the agent, the head, the launcher: hashing, HTTP, the
// server sockets' cluster check, DNS, performance.now) are loaded before it: 7-10 ms of CPU,
// against 19-24 ms after it (medians of 15 runs each).
for (const id of ['node:crypto', 'node:http', 'node:cluster', 'node:dns', 'node:perf_hooks'] as const) process.getBuiltinModule(id)
v8.setFlagsFromString('--no-maglev')

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
// A node agent's JavaScript is the glue around the addon's data path (native/: the wire, the store,
// the FUSE server), and most agents live for one launch: TurboFan's compiles on V8's worker threads,
// and the deoptimizations after them, cost an agent more than its optimized code saves. Without it
// the agent's code tops out at Sparkplug's. Measured on the emulated cluster (bench/README.md,
// 2026-12-03): whole-life agent CPU 1.03-1.07 against 1.17-1.22 CPU-s at 32 nodes, 0.85-0.99 against
// 0.93-1.07 at 8. The head keeps TurboFan: its tracker answers thousands of nodes.
if (command === 'mount' || command === 'node-agent') v8.setFlagsFromString('--no-turbofan')
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
// compile cache (bin/p2prun) in that teardown, so it is flushed first: a no-op once it is warm.
// A profiler (--cpu-prof, --heap-prof, --prof) writes its output in that teardown: then it runs.
const code = typeof process.exitCode === 'number' ? process.exitCode : 0
const profiled = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => /^--(cpu-prof|heap-prof|prof)\b/.test(a))
if (!profiled) {
  module.flushCompileCache()
  ;(await import('../lib/native.ts')).native?.exitNow(code)
}
process.exit(code)
