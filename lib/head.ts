// The head's bootstrap daemons for one job: the tracker (which also hands out the description) and
// the seeder, started and stopped together, and with --discovery dht the DHT node that bootstraps
// the job's own DHT (the tracker then takes no node's announce). Used by `p2prun serve` and by the
// launcher.
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import type { Config } from './config.ts'
import type { SourceLayout } from './source-layout.ts'
import type { Description } from './description.ts'
import type { JobSecret } from './swarm/job-auth.ts'
import type { DhtBootstrap } from './swarm/dht.ts'
import { nativeSeederRefusal, startNativeSeeder } from './swarm/native-seeder.ts'
import { startSeeder, type Seeder, type SeederOptions } from './swarm/seeder.ts'
import { DESCRIPTION_PATH, startTracker, type Tracker } from './swarm/tracker.ts'

export interface Head {
  readonly trackerUrl: string
  readonly seederAddress: string
  /** host:port (UDP) of the head's DHT node, every node's DHT bootstrap; undefined: nodes use the tracker. */
  readonly dhtAddress: string | undefined
  /** Where nodes GET the description (and check it against the infohash they were given). */
  readonly descriptionUrl: string
  /** Whether the source was hashed at start (false: sizes and mtimes matched the description). */
  readonly verified: boolean
  /** The job's secret, which the tracker and the seeder require; undefined: open to anyone. */
  readonly secret: JobSecret | undefined
  /** POSTing here asks the head to stop (`onStopRequest`, or it resolves `stopped`); the URL is the secret. */
  readonly stopUrl: string
  readonly stopped: Promise<void>
  uploaded (): number
  maxToOneNode (): number
  /** Bytes of the description sent to nodes: over HTTP and to peers of the swarm. */
  descriptionBytes (): number
  /** Once this resolves, uploaded, maxToOneNode and descriptionBytes are up to date. */
  refresh (): Promise<void>
  peerCount (): number
  /** ms from head start at which each node announced it had the whole set. */
  completions (): readonly number[]
  close (): Promise<void>
}

/**
 * Nodes reach the head at the advertised address (advertisedHost); it binds to the config's host.
 * `warn` hears of trouble the head survives (a source that changed while it was served).
 * `secret`: the job's, which the tracker and the seeder require; undefined serves anyone (--open).
 * `onStopRequest`: hears stop requests (with the ending Slurm job's id, if given) and calls `stop`
 * if the head should go; without it, every request stops the head.
 */
export async function startHead (desc: Description, source: SourceLayout, config: Config,
  warn: (line: string) => void, secret: JobSecret | undefined,
  onStopRequest?: (jobId: string | undefined, stop: () => void) => void): Promise<Head> {
  const advertise = advertisedHost(config)
  const token = randomBytes(16).toString('hex')
  let requestStop = () => {}
  const stopped = new Promise<void>((resolve) => { requestStop = resolve })
  const tracker: Tracker = await startTracker({
    // A Slurm job's head decides whether a request stops it (an array's first task is not its last).
    stop: { token, onStop: (jobId) => (onStopRequest ? onStopRequest(jobId, () => requestStop()) : requestStop()) },
    // Listeners bind where nodes are told to reach them, not to every interface of the host.
    host: config.host ?? advertise,
    port: config.trackerPort,
    infoHashes: [desc.infoHash],
    descriptions: new Map([[desc.infoHash, desc.torrent]]),
    maxPeers: config.trackerMaxPeers,
    announcePeers: config.trackerAnnouncePeers,
    secret
  })
  const base = `http://${advertise}:${tracker.port}`
  let seeder: Seeder
  let dht: DhtBootstrap | undefined
  try {
    if (config.discovery === 'dht') dht = await (await import('./swarm/dht.ts')).startDhtBootstrap(config.host ?? advertise, config.dhtPort, advertise)
    // Nodes know the seeder from their job spec: with a DHT it need not be listed anywhere.
    seeder = await seedSet(desc, source, config, advertise, config.seederPort, tracker, dht ? undefined : `${base}/announce`, secret, warn)
  } catch (err) {
    await Promise.all([tracker.close(), dht?.close()])
    throw err
  }
  let closing: Promise<void> | undefined
  return {
    trackerUrl: `${base}/announce`,
    seederAddress: `${advertise}:${seeder.port}`,
    dhtAddress: dht?.address,
    descriptionUrl: `${base}${DESCRIPTION_PATH}${desc.infoHash}.torrent`,
    verified: seeder.verified,
    secret,
    stopUrl: `${base}${DESCRIPTION_PATH}stop/${token}`,
    stopped,
    uploaded: () => seeder.uploaded(),
    maxToOneNode: () => seeder.maxToOnePeer(),
    descriptionBytes: () => tracker.descriptionBytes() + seeder.descriptionBytes(),
    refresh: () => seeder.refresh(),
    // With a DHT, the nodes that announced to the head's DHT node: all of them in a small job; at
    // scale, the announces land on the DHT nodes nearest the infohash, the head among them or not.
    peerCount: () => dht ? dht.announced(desc.infoHash) : tracker.peerCount(desc.infoHash),
    completions: () => tracker.completions(),
    close: () => (closing ??= seeder.close().finally(() => Promise.all([tracker.close(), dht?.close()])).then(() => {}))
  }
}

/**
 * A set's seeder beside `tracker`, announcing itself to it (at `trackerUrl`, if given) so that nodes
 * find it: the native one (native-seeder.ts) where it serves the options, unless the `agent`
 * setting says node.
 */
function seedSet (desc: Description, source: SourceLayout, config: Config, advertise: string, port: number, tracker: Tracker,
  trackerUrl: string | undefined, secret: JobSecret | undefined, warn: (line: string) => void): Promise<Seeder> {
  const options: SeederOptions = {
    host: config.host ?? advertise,
    port,
    trackers: trackerUrl ? [trackerUrl] : [],
    maxConns: config.headMaxConns,
    verify: config.verifySource,
    uploadLimit: config.uploadLimit,
    deferToPeersMs: config.deferToPeersMs,
    secret,
    // Before any node joined, the first holders are still on their way: they, not the head, serve
    // the rest. The tracker lists nodes once they joined, i.e. once they had the description, and
    // the seeder. A DHT tells no one when a node leaves: there, the nodes connected to this seeder
    // (every node keeps one connection to it).
    noOtherHolder: trackerUrl
      ? () => tracker.nodesJoined(desc.infoHash) > 0 && tracker.peerCount(desc.infoHash) <= 1
      : (seen) => seen.joined > 0 && seen.connected === 0
  }
  const native = config.agent !== 'node' && nativeSeederRefusal(options, source) === undefined
  return native ? startNativeSeeder(desc, source, options, warn) : startSeeder(desc, source, options, warn)
}

/**
 * A system-wide head (`p2prun serve --sets DIR`, on an I/O node): one tracker for many jobs' sets,
 * each with its seeder, added and removed while it runs. The costs per node are a one-set head's.
 */
export interface SetHead {
  readonly trackerUrl: string
  /** Serves a set; returns its seeder's address. */
  add (desc: Description, source: SourceLayout): Promise<string>
  /** Stops serving a set: its seeder closes, the tracker forgets it. */
  remove (infoHash: string): Promise<void>
  close (): Promise<void>
}

export async function startSetHead (config: Config, warn: (line: string) => void, secret: JobSecret | undefined): Promise<SetHead> {
  const advertise = advertisedHost(config)
  const tracker = await startTracker({
    host: config.host ?? advertise,
    port: config.trackerPort,
    infoHashes: [],
    maxPeers: config.trackerMaxPeers,
    announcePeers: config.trackerAnnouncePeers,
    secret
  })
  const trackerUrl = `http://${advertise}:${tracker.port}/announce`
  const seeders = new Map<string, Seeder>()
  const remove = async (infoHash: string) => {
    const seeder = seeders.get(infoHash)
    seeders.delete(infoHash)
    tracker.unserve(infoHash)
    await seeder?.close()
  }
  return {
    trackerUrl,
    add: async (desc, source) => {
      await remove(desc.infoHash)
      // Listed first, so that the seeder's own announce is accepted.
      tracker.serve(desc.infoHash, desc.torrent)
      try {
        // Each set's seeder on a port of its own: --seeder-port names one port, for one set.
        const seeder = await seedSet(desc, source, config, advertise, 0, tracker, trackerUrl, secret, warn)
        seeders.set(desc.infoHash, seeder)
        return `${advertise}:${seeder.port}`
      } catch (err) {
        tracker.unserve(desc.infoHash)
        throw err
      }
    },
    remove,
    close: async () => {
      await Promise.all([...seeders.keys()].map(remove))
      await tracker.close()
    }
  }
}

/** The address other hosts reach this one at: the bind address, or the first non-loopback IPv4. */
function advertisedHost (config: Config): string {
  if (config.advertise) return config.advertise
  if (config.host !== undefined && config.host !== '0.0.0.0' && config.host !== '::') return config.host
  for (const addrs of Object.values(os.networkInterfaces())) {
    const v4 = addrs?.find((a) => a.family === 'IPv4' && !a.internal)
    if (v4) return v4.address
  }
  return '127.0.0.1'
}
