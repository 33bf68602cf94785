// `p2prun local-ranks -n N -- CMD…` (internal): the local launcher. Starts N copies of CMD with the
// rank variables a real launcher would set, forwards SIGINT/SIGTERM/SIGHUP to them, and exits with
// the first non-zero exit code (128+signal for a rank killed by a signal), as mpirun does.
import { spawn, type ChildProcess } from 'node:child_process'
import { constants } from 'node:os'
import type { Command } from 'commander'
import { action } from '../cli-support.ts'
import { parseRankCount } from '../run-args.ts'

export function registerLocalRanks (program: Command): void {
  program.command('local-ranks', { hidden: true })
    .description('(internal) start N ranks on this host')
    .option('-n, --np <count>', 'number of ranks')
    .argument('<command...>')
    .action(action('local-ranks', async (command: string[], opts: { np?: string }) => {
      const n = opts.np === undefined ? 1 : parseRankCount('-n', opts.np)
      const [file, ...args] = command as [string, ...string[]]
      const ranks: ChildProcess[] = []
      const exits = Array.from({ length: n }, (_, rank) => new Promise<number>((resolve) => {
        const child = spawn(file, args, {
          stdio: 'inherit',
          env: { ...process.env, P2PRUN_RANK: String(rank), P2PRUN_SIZE: String(n), P2PRUN_LOCAL_RANK: String(rank), P2PRUN_LOCAL_SIZE: String(n) }
        })
        ranks.push(child)
        child.on('error', () => resolve(127))
        child.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] : 0)))
      }))
      const forward = (sig: NodeJS.Signals) => { for (const r of ranks) r.kill(sig) }
      for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, forward)
      const codes = await Promise.all(exits)
      process.exitCode = codes.find((c) => c !== 0) ?? 0
    }))
}
