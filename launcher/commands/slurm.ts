// Slurm integration, the commands behind the thin hooks/ scripts and the slurm/ SPANK plugin
// (lib/session/slurm.ts does the work):
//   p2prun slurm head --libs A[,B]   (plugin, at submit time) describe (auto:PROGRAM: what it loads), start a detached head, print the job spec
//   p2prun slurm prolog              (Prolog=, root, every node) start the job's node agent, wait until ready
//   p2prun slurm epilog              (Epilog=, root, every node) stop it, leave nothing, stop the head; never fails;
//                                    and, for any job, stop an agent its launches left lingering
import type { Command } from 'commander'
import { formatError } from '../../lib/errors.ts'
import { startDetachedHead } from '../../lib/session/detached-head.ts'
import { jobOfHook, slurmLibs, startJobAgent, stopJobAgent, stopLingeringAgent } from '../../lib/session/slurm.ts'
import { action } from '../cli-support.ts'

const collect = (value: string, previous: string[] = []) => [...previous, ...value.split(',').filter(Boolean)]

export function registerSlurm (program: Command, cli: readonly string[]): void {
  const slurm = program.command('slurm').description('Slurm integration: what the SPANK plugin and the prolog/epilog hooks call')

  slurm.command('head')
    .description('describe DIRs, start a detached tracker + seeder for a job, print its job spec (SPANK plugin, submit time)')
    .requiredOption('--libs <dirs>', 'library directories, comma-separated or repeated; auto:PROGRAM for what PROGRAM loads', collect)
    .option('--mount-root <dir>', 'where nodes mount (default: the description\'s mount point)')
    .action(action('slurm head', async (opts: { libs: string[], mountRoot?: string }) => {
      const request = { ...slurmLibs(opts.libs, process.cwd()), ...(opts.mountRoot ? { mountPoint: `${opts.mountRoot}/%j-%n` } : {}), slurm: true }
      process.stdout.write(`${await startDetachedHead(cli, request)}\n`)
    }))

  slurm.command('prolog')
    .description('start this node\'s agent for the job if it asked for --p2plibs (Prolog=, as root)')
    .action(action('slurm prolog', async () => {
      const job = jobOfHook(process.env)
      if (job) await startJobAgent(cli, job, process.env)
    }))

  slurm.command('epilog')
    .description('stop this node\'s agent for the job and remove everything (Epilog=, as root; never fails)')
    .action(async () => {
      try {
        const job = jobOfHook(process.env)
        if (job) await stopJobAgent(job, process.env)
        await stopLingeringAgent(process.env)
      } catch (err) {
        process.stderr.write(`p2prun slurm epilog: warning: ${formatError(err)}\n`)
      }
      process.exitCode = 0
    })
}
