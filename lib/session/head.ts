// A launch's head, and the job spec that points its nodes at it: the launch's own tracker and
// seeder with a secret made for the job, or a running `p2prun serve` (an I/O node's, --seeder)
// with the secret it was started with; a Slurm job's detached head builds its spec the same way.
import type { Config } from '../config.ts'
import { peerShareable, type Description } from '../description.ts'
import { networkReason, P2prunError, usageError } from '../errors.ts'
import type { Head } from '../head.ts'
import type { SourceLayout } from '../source-layout.ts'
import { newJobSecret, secretFromEnv, withProof } from '../swarm/job-auth.ts'
import { agentKind } from '../agent-choice.ts'
import { nodeOptions } from '../agent-settings.ts'
import { JOB_SPEC_VERSION, nodeSettings, specDescription, type JobSpec } from './job-spec.ts'
import { taskEnvTemplate } from './rank-env.ts'

/** What a launch needs of its head; an external one reports no counts (they are its own). */
export type LaunchHead = Pick<Head, 'trackerUrl' | 'descriptionUrl' | 'secret' | 'uploaded' | 'maxToOneNode' | 'descriptionBytes' | 'refresh' | 'peerCount' | 'completions' | 'close'> &
  { readonly seederAddress?: string, readonly dhtAddress?: string }

/**
 * The launch's own head (`seeder` undefined), or the one at `seeder`, checked to serve this set to
 * this job's secret. `warn` hears of trouble the head survives.
 */
export async function launchHead (desc: Description, layout: SourceLayout, config: Config, seeder: string | undefined,
  warn: (line: string) => void): Promise<LaunchHead> {
  if (seeder === undefined) {
    const { startHead } = await import('../head.ts')
    return startHead(desc, layout, config, warn, newJobSecret())
  }
  if (config.discovery === 'dht') {
    throw usageError('with --seeder, nodes find each other through that head\'s tracker: --discovery dht needs the launch\'s own head',
      'leave out --seeder, or --discovery')
  }
  const secret = secretFromEnv(process.env)
  const trackerUrl = seeder.endsWith('/announce') ? seeder : `${seeder.replace(/\/$/, '')}/announce`
  const descriptionUrl = trackerUrl.replace(/\/announce$/, `/p2prun/${desc.infoHash}.torrent`)
  const res = await fetch(withProof(descriptionUrl, secret, 'description', Buffer.from(desc.infoHash, 'hex')),
    { signal: AbortSignal.timeout(10_000) }).catch((err: unknown) => {
    throw new P2prunError('LAUNCH', `the seeder at ${seeder} is unreachable: ${networkReason(err)}`,
      { hint: 'start it with `p2prun serve FILE --source DIR` on the I/O node, or leave out --seeder' })
  })
  if (res.status === 403) {
    throw new P2prunError('LAUNCH', `the seeder at ${seeder} serves only its job's nodes, and ${secret ? 'this P2PRUN_SECRET is not its secret' : 'P2PRUN_SECRET is not set'}`,
      { hint: 'export the P2PRUN_SECRET that `p2prun serve` was started with' })
  }
  if (!res.ok) {
    throw new P2prunError('LAUNCH', `the seeder at ${seeder} does not serve these libraries (infohash ${desc.infoHash})`,
      { hint: 'serve a description of the same directory there' })
  }
  const none = () => 0
  return { trackerUrl, descriptionUrl, secret, uploaded: none, maxToOneNode: none, descriptionBytes: none, refresh: async () => {}, peerCount: none, completions: () => [], close: async () => {} }
}

/**
 * Refuses --discovery nodes for a head whose nodes have no node list: a head on its own (`p2prun
 * head`, `serve`) does not know them; a launch does (`p2prun -n`: the launcher's hosts) and so does
 * a Slurm job (its prolog's hostlist). Before any head starts.
 */
export function checkDiscovery (config: Config, slurm: boolean): void {
  if (config.discovery === 'nodes' && !slurm) {
    throw usageError('--discovery nodes takes the peers from the launch\'s node list, which a head on its own does not know',
      'give it to p2prun -n (it reads the launcher\'s hosts) or to a --p2plibs job, or use --discovery tracker or dht here')
  }
}

/** The nodes' mount point template: the one given, or under the description's, per launch and node. */
export function mountPointOf (desc: Description, template: string | undefined): string {
  return template ?? `${desc.mountPoint}/%j-%n`
}

/** Where the set sits in the mount, as launch-set.ts placed it. */
export type Placement = Pick<JobSpec, 'libDirs' | 'program' | 'pythonPath' | 'redirect'>

/**
 * The spec that points a launch's nodes at `head`, with the launch's node settings, and the
 * description itself when the settings say so and it fits. `stopUrl`: where a Slurm job's epilogs
 * stop its head (a launch stops its own); a Slurm job's spec goes through the SPANK plugin, whose
 * buffer takes 8 KB (slurm/p2plibs.c): `inline` false.
 */
export function jobSpecOf (head: LaunchHead, desc: Description, layout: SourceLayout, config: Config,
  launch: { readonly launchId: string, readonly mountPoint: string, readonly placement: Placement, readonly stopUrl?: string, readonly inline: boolean,
    /** With --discovery nodes, the launcher's hosts (a hostlist); absent: each node reads Slurm's. */
    readonly nodeNames?: string }): JobSpec {
  const description = launch.inline && config.descriptionRoute === 'spec' ? specDescription(peerShareable(desc)) : undefined
  const byList = config.discovery === 'nodes'
  const spec: JobSpec = {
    version: JOB_SPEC_VERSION,
    launchId: launch.launchId,
    infoHash: desc.infoHash,
    descriptionUrl: head.descriptionUrl,
    // With a DHT or a node list, nodes never announce to the tracker.
    trackers: head.dhtAddress || byList ? [] : [head.trackerUrl],
    seeders: head.seederAddress ? [head.seederAddress] : [],
    ...(head.dhtAddress ? { dht: [head.dhtAddress] } : {}),
    ...(byList ? { nodeList: { host: config.nodeHost, port: config.nodePort, ...(launch.nodeNames !== undefined ? { names: launch.nodeNames } : {}) } } : {}),
    mountPoint: launch.mountPoint,
    ...launch.placement,
    node: nodeSettings(config),
    sources: layout.dirs,
    ...(launch.stopUrl ? { stopUrl: launch.stopUrl } : {}),
    ...(description ? { description } : {}),
    ...(head.secret ? { secret: head.secret.toString('hex') } : {}),
    taskEnv: taskEnvTemplate(launch.placement)
  }
  return { ...spec, node: { ...spec.node, agent: nodeAgentKind(spec, desc) } }
}

/**
 * Which agent the nodes run, decided once here (a refused `--agent native` fails the launch, not
 * each node): native/agent/node-agent.c serves a spec that says `native` without Node.
 */
function nodeAgentKind (spec: JobSpec, desc: Description): JobSpec['node']['agent'] {
  const settings = spec.node
  return agentKind({
    description: desc,
    // Each node reads its own node list; that there is one is what counts here.
    node: nodeOptions(settings, { trackers: spec.trackers, seeders: spec.seeders, dht: spec.dht, sources: spec.sources, nodeList: spec.nodeList && { nodes: [], index: 0 } }),
    // With agent-linger, the native agent keeps the store for the node's next launch itself (native/agent/linger.c).
    keepStore: false
  }, settings.agent)
}
