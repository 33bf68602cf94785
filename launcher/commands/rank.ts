// `p2prun rank-prepare --pid PID -- PROGRAM ARGS…` (internal, run by bin/p2prun-rank): readies
// this node for the rank and prints the LD_LIBRARY_PATH to exec PROGRAM with.
import type { Command } from 'commander'
import { action } from '../cli-support.ts'
import { prepareRank } from '../rank-step.ts'

export function registerRank (program: Command, cli: readonly string[]): void {
  program.command('rank-prepare', { hidden: true })
    .description('(internal) per-rank step: node agent, then print the library path')
    .requiredOption('--pid <pid>', 'the rank\'s process, which becomes the program')
    .argument('<program...>')
    .action(action('rank', async (argv: string[], opts: { pid: string }) => {
      process.stdout.write(`${await prepareRank(argv, Number(opts.pid), cli)}\n`)
    }))
}
