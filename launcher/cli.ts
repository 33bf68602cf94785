// p2prun: `p2prun [options] PROGRAM` launches a job (like mpirun/srun); the subcommands are the
// steps of a launch, usable on their own. Heavy modules (webtorrent, fuse-native) are imported by
// the commands that need them, so help and the per-rank step start fast.
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import { formatError, P2prunError } from '../lib/errors.ts'
import { VERSION } from '../lib/version.ts'
import { registerDescribe, registerInspect } from './commands/describe.ts'
import { registerFetch } from './commands/fetch.ts'
import { registerLocalRanks } from './commands/local-ranks.ts'
import { registerMount } from './commands/mount.ts'
import { registerNodeAgent } from './commands/node-agent.ts'
import { registerRank } from './commands/rank.ts'
import { runLaunch } from './commands/run.ts'
import { registerServe } from './commands/serve.ts'
import { registerSlurm } from './commands/slurm.ts'

/** Ranks, agents and the local launcher call this same installation by its absolute path. */
const BIN = path.join(path.dirname(path.dirname(fileURLToPath(import.meta.url))), 'bin')
const CLI = [path.join(BIN, 'p2prun')]

const program = new Command('p2prun')
  .usage('[options] [launcher options] PROGRAM [ARGS...]  |  p2prun COMMAND ...')
  .description('Launch an MPI/Slurm job whose shared libraries load peer-to-peer from a BitTorrent-backed FUSE mount.\n\n' +
    'Launch options: --libs DIR (repeatable), --launcher auto|local|openmpi|mpich|srun, --seeder URL,\n' +
    '--mode block|file|eager, --mount-point TEMPLATE, --config FILE, --dry-run, --quiet, --stats.\n' +
    'Every other option goes to the launcher unchanged; "--" ends p2prun\'s options.\n' +
    'Example: p2prun -n 4 --libs ./libs ./app')
  .version(VERSION)
  .option('--config <file>', 'YAML settings file (default: ./p2prun.yaml if present)')
  .showHelpAfterError('(run p2prun --help for usage)')
  .configureHelp({ sortSubcommands: false })

registerDescribe(program)
registerInspect(program)
registerServe(program)
registerFetch(program)
registerMount(program)
registerRank(program, CLI)
registerNodeAgent(program)
registerLocalRanks(program)
registerSlurm(program, CLI)

const first = process.argv[2]
const isCommand = first !== undefined && program.commands.some((c) => c.name() === first)
if (first === undefined || isCommand || ['-h', '--help', '-V', '--version'].includes(first)) {
  await program.parseAsync(process.argv)
} else {
  try {
    await runLaunch(process.argv.slice(2), CLI, path.join(BIN, 'p2prun-rank'))
  } catch (err) {
    process.stderr.write(`p2prun: error: ${formatError(err)}\n`)
    process.exitCode = err instanceof P2prunError && err.code === 'USAGE' ? 2 : 1
  }
}
// A command is done when its action returns; sockets a swarm client may still be closing (a last
// "stopped" announce to an unreachable tracker) must not keep the process alive.
process.exit(process.exitCode ?? 0)
