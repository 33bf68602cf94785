// `p2prun node-agent STATE_DIR` (internal): one node's agent for one launch, started detached by the
// node's first rank. Gets the description from peers that have it, else from the head (checked
// against the infohash the launcher handed out), mounts it on the swarm, says ready, and stays
// until the node's last rank has ended — however it ended — then unmounts and removes its state.
import { readdir, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import type { Command } from 'commander'
import { loadConfig } from '../../lib/config.ts'
import { parseDescription, type Description } from '../../lib/description.ts'
import { formatError, networkReason, P2prunError } from '../../lib/errors.ts'
import { writeAtomic } from '../../lib/files.ts'
import { decodeJob, expandTemplate, JOB_ENV, libraryPath, type JobSpec } from '../../lib/job.ts'
import { parseJobSecret, withProof, type JobSecret } from '../../lib/swarm/job-auth.ts'
import { isAlive } from '../agent-state.ts'
import { action, agentOptions, nodeOptions, untilSignal } from '../cli-support.ts'
import { FAILED_FILE, LDPATH_FILE, RANKS_DIR, READY_FILE } from '../rank-step.ts'

/** How often the agent checks whether its ranks still run (another process's exit cannot be awaited). */
const RANK_CHECK_MS = 25

export function registerNodeAgent (program: Command): void {
  program.command('node-agent', { hidden: true })
    .description('(internal) the node agent of one launch')
    .argument('<state-dir>')
    .requiredOption('--node <name>', 'this node\'s name')
    .option('--expect <count>', 'ranks of the launch on this node (0: unknown)', '0')
    .option('--until-stopped', 'serve until SIGTERM (Slurm\'s epilog), not until the ranks are gone')
    .option('--launch-id <id>', 'this launch\'s id on the node (default: from the job spec)')
    .action(action('node-agent', async (stateDir: string, opts: { node: string, expect: string, untilStopped?: boolean, launchId?: string }) => {
      const job = decodeJob(process.env[JOB_ENV])
      const config = await loadConfig({ flags: {}, env: process.env, cwd: process.cwd() })
      const signal = untilSignal()
      const log = (line: string) => process.stderr.write(`p2prun node-agent: ${line}\n`)
      let agent
      try {
        const secret = job.secret === undefined ? undefined : parseJobSecret(job.secret, `${JOB_ENV}'s secret`)
        const desc = (secret && await descriptionFromPeers(job, secret, log)) ??
          await fetchDescription(withProof(job.descriptionUrl, secret, 'description', Buffer.from(job.infoHash, 'hex')),
            job.infoHash, opts.node, config.stallTimeoutMs)
        const { Agent } = await import('../../lib/agent.ts')
        const mountPoint = expandTemplate(job.mountPoint, { infoHash: desc.infoHash, nodeName: opts.node, launchId: opts.launchId ?? job.launchId })
        agent = await Agent.start(agentOptions(config, desc, mountPoint, {
          mode: job.mode,
          node: nodeOptions(config, { trackers: job.trackers, seeders: job.seeders, secret, sources: job.sources }),
          keepStore: false,
          log
        }))
      } catch (err) {
        await writeFile(path.join(stateDir, FAILED_FILE), JSON.stringify({ error: formatError(err) }), { flag: 'wx' }).catch(() => {})
        throw err
      }
      try {
        await writeFile(path.join(stateDir, LDPATH_FILE), `${libraryPath(agent.mountPoint, job.libDirs, undefined)}\n`)
        await writeAtomic(path.join(stateDir, READY_FILE), JSON.stringify({ mountPoint: agent.mountPoint, pid: process.pid, storePath: agent.storePath }))
        log(`${agent.mountPoint} ready for the ranks on ${opts.node}`)
        await (opts.untilStopped ? signal : Promise.race([signal, ranksEnded(path.join(stateDir, RANKS_DIR), Number(opts.expect))]))
      } finally {
        await agent.stop()
        await rm(stateDir, { recursive: true, force: true })
      }
    }))
}

/**
 * The description from peers of the job's swarm (swarm/description-exchange.ts), checked against
 * the infohash; undefined if none handed it over in time: the head is asked then.
 */
async function descriptionFromPeers (job: JobSpec, secret: JobSecret, log: (line: string) => void): Promise<Description | undefined> {
  const { fetchDescriptionFromPeers } = await import('../../lib/swarm/description-exchange.ts')
  let desc: Description | undefined
  const bytes = await fetchDescriptionFromPeers({
    infoHash: Buffer.from(job.infoHash, 'hex'),
    secret,
    trackers: job.trackers,
    seeders: job.seeders,
    deadlineMs: PEER_DESCRIPTION_MS,
    accept: (candidate) => {
      try {
        desc = parseDescription(candidate, { source: 'a peer', expectInfoHash: job.infoHash })
        return true
      } catch {
        return false // another peer may have the right one
      }
    }
  })
  if (!bytes) log(`no peer handed over the description in ${PEER_DESCRIPTION_MS / 1000} s: asking the head`)
  return desc
}

/** How long a node tries peers for the description before it asks the head over HTTP. */
const PEER_DESCRIPTION_MS = 10_000

/** `url` carries the request's proof: messages name it without. */
async function fetchDescription (url: string, infoHash: string, node: string, timeoutMs: number): Promise<Description> {
  const where = url.replace(/\?.*/, '')
  let bytes: Uint8Array
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    bytes = new Uint8Array(await res.arrayBuffer())
  } catch (err) {
    throw new P2prunError('LAUNCH', `node ${node} cannot get the description from ${where}: ${networkReason(err)}`,
      { hint: 'check that the submitting host (or --seeder) is reachable from this node', cause: err })
  }
  return parseDescription(bytes, { source: where, expectInfoHash: infoHash })
}

/** Resolves once at least `expected` ranks registered (1 if unknown) and none of them is alive. */
async function ranksEnded (dir: string, expected: number): Promise<void> {
  for (;;) {
    const pids = (await readdir(dir).catch(() => [])).map(Number)
    if (pids.length >= Math.max(expected, 1)) {
      const alive = await Promise.all(pids.map((pid) => isAlive(pid)))
      if (!alive.includes(true)) return
    }
    await delay(RANK_CHECK_MS)
  }
}
