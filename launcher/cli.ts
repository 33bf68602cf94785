// p2prun: one CLI, one subcommand per role step. Heavy modules (webtorrent, fuse-native) are
// imported inside the commands that need them, so `--help` and `inspect` start fast.
import { Command } from 'commander'
import { VERSION } from '../lib/version.ts'
import { registerDescribe, registerInspect } from './commands/describe.ts'
import { registerFetch } from './commands/fetch.ts'
import { registerMount } from './commands/mount.ts'
import { registerServe } from './commands/serve.ts'

const program = new Command('p2prun')
  .description('Peer-to-peer shared-library loading for HPC job launches')
  .version(VERSION)
  .option('--config <file>', 'YAML settings file (default: ./p2prun.yaml if present)')
  .showHelpAfterError('(run p2prun --help for usage)')
  .configureHelp({ sortSubcommands: false })

registerDescribe(program)
registerInspect(program)
registerServe(program)
registerFetch(program)
registerMount(program)

await program.parseAsync(process.argv)
// A command is done when its action returns; sockets a swarm client may still be closing (a last
// "stopped" announce to an unreachable tracker) must not keep the process alive.
process.exit(process.exitCode ?? 0)
