// `p2prun rank-prepare --pid PID -- PROGRAM ARGS…` (internal, run by bin/p2prun-rank): readies
// this node for the rank (lib/session/rank.ts) and prints, one per line, what the shell execs
// PROGRAM with (the format is bin/p2prun-rank's): the LD_LIBRARY_PATH; the program's path in the
// mount, or nothing; then NAME=VALUE lines of environment to export (the audit module's, PYTHONPATH).
import type { Command } from 'commander'
import { usageError } from '../../lib/errors.ts'
import { prepareRank } from '../../lib/session/rank.ts'
import { action } from '../cli-support.ts'

export function registerRank (program: Command, cli: readonly string[]): void {
  program.command('rank-prepare', { hidden: true })
    .description('(internal) per-rank step: node agent, then print the library path')
    .requiredOption('--pid <pid>', 'the rank\'s process, which becomes the program')
    .argument('<program...>')
    .action(action('rank', async (argv: string[], opts: { pid: string }) => {
      const exec = await prepareRank(argv, Number(opts.pid), cli, process.env)
      const lines = [exec.libraryPath, exec.program ?? '', ...Object.entries(exec.env).map(([k, v]) => `${k}=${v}`)]
      // A line is one value to the shell: a path with a newline would split it.
      if (lines.some((l) => l.includes('\n'))) throw usageError('a library or mount path contains a newline', 'rename it')
      process.stdout.write(`${lines.join('\n')}\n`)
    }))
}
