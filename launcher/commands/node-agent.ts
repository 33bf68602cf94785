// `p2prun node-agent --node NAME --launch-id ID` (internal): one node's agent for one launch,
// started detached by the node's first rank or by Slurm's prolog (lib/session/node.ts).
import type { Command } from 'commander'
import { decodeJob, JOB_ENV } from '../../lib/session/job-spec.ts'
import { runAgent } from '../../lib/session/node.ts'
import { action, untilSignal } from '../cli-support.ts'

export function registerNodeAgent (program: Command): void {
  program.command('node-agent', { hidden: true })
    .description('(internal) the node agent of one launch')
    .requiredOption('--node <name>', 'this node\'s name')
    .requiredOption('--launch-id <id>', 'this launch\'s id on the node')
    .option('--expect <count>', 'ranks of the launch on this node (0: unknown)', '0')
    .option('--until-stopped', 'serve until SIGTERM (Slurm\'s epilog), not until the ranks are gone')
    .action(action('node-agent', async (opts: { node: string, launchId: string, expect: string, untilStopped?: boolean }) => {
      const job = decodeJob(process.env[JOB_ENV])
      const launch = { job, node: opts.node, launchId: opts.launchId, expect: Number(opts.expect), untilStopped: opts.untilStopped, env: process.env }
      const log = (line: string) => process.stderr.write(`p2prun node-agent: ${line}\n`)
      // A Slurm job's agent serves the whole job already: only a launch's own agent lingers.
      if (job.node.agentLingerMs > 0 && !opts.untilStopped) {
        await (await import('../../lib/session/warm-agent.ts')).serveLaunches(launch, untilSignal(), job.node.agentLingerMs, log)
      } else {
        await runAgent(launch, untilSignal(), log)
      }
    }))
}
