// A node's agent and swarm client, from the settings that shape them: a launch's node settings
// (session/job-spec.ts) or a command's own (`p2prun mount`, `p2prun fetch`).
import type { AgentOptions } from './agent.ts'
import type { Config } from './config.ts'
import type { Description } from './description.ts'
import type { SourceLayout } from './source-layout.ts'
import type { DhtLookup } from './swarm/dht.ts'
import type { JobSecret } from './swarm/job-auth.ts'
import type { NodeList } from './swarm/node-list.ts'

type SwarmSettings = Pick<Config, 'fallback' | 'storeDir' | 'maxConns' | 'numwant' | 'stallTimeoutMs'>
type MountSettings = Pick<Config, 'allowOther' | 'fuseDevice' | 'owner'>

/** Where a node's swarm client gets its peers, the job's secret, and its settings. */
export function nodeOptions (settings: SwarmSettings,
  peers: { trackers?: readonly string[], seeders?: readonly string[], dht?: readonly string[], dhtLookup?: DhtLookup, nodeList?: NodeList, secret?: JobSecret, sources?: SourceLayout['dirs'] }): AgentOptions['node'] {
  return {
    secret: peers.secret,
    fallback: settings.fallback === 'auto' && peers.sources?.length ? { dirs: peers.sources } : undefined,
    storeDir: settings.storeDir,
    port: 0,
    maxConns: settings.maxConns,
    numwant: settings.numwant,
    stallTimeoutMs: settings.stallTimeoutMs,
    trackers: peers.trackers,
    seeders: peers.seeders,
    dht: peers.dht,
    dhtLookup: peers.dhtLookup,
    nodeList: peers.nodeList
  }
}

/** A node agent; files are owned by the `owner` setting, else by this process's user. */
export function agentOptions (settings: MountSettings, description: Description, mountPoint: string,
  rest: Pick<AgentOptions, 'mode' | 'node' | 'keepStore' | 'log'>): AgentOptions {
  return {
    ...rest,
    description,
    mountPoint,
    allowOther: settings.allowOther,
    fuseDevice: settings.fuseDevice,
    uid: settings.owner?.uid ?? process.getuid?.() ?? 0,
    gid: settings.owner?.gid ?? process.getgid?.() ?? 0
  }
}
