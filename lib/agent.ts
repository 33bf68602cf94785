// The node agent: joins the job's swarm, mounts the library file system on it, and takes both
// down again. Used by `p2prun mount`, and by `p2prun node-agent` (the launcher's and the Slurm
// prolog's per-node agent).
import { formatError } from './errors.ts'
import type { Description } from './description.ts'
import type { DataMode } from './config.ts'
import { LibraryFs, type FsStats } from './fs.ts'
import { mountFs, type Mounted } from './mount.ts'
import { SwarmNode, type KeptStore, type NodeOptions, type NodeStats } from './swarm/node.ts'

export interface AgentOptions {
  readonly description: Description
  readonly mountPoint: string
  readonly mode: DataMode
  readonly node: NodeOptions
  readonly allowOther: boolean
  readonly keepStore: boolean
  readonly fuseDevice: string
  readonly uid: number
  readonly gid: number
  readonly log: (line: string) => void
}

export interface AgentStats {
  readonly infoHash: string
  readonly mode: DataMode
  readonly mountPoint: string
  readonly fs: FsStats
  readonly swarm: NodeStats
}

/** A node agent serving a mount: this process's (Agent) or a native one it started (native-agent.ts); agent-choice.ts picks. */
export interface RunningAgent {
  readonly kind: 'node' | 'native'
  readonly mountPoint: string
  /** The store's path, to remove after an agent that died; undefined: none is left to remove. */
  readonly storePath: string | undefined
  /** What it moved and served so far (once stopped: in all). */
  stats (): Promise<object | undefined>
  /** Unmounts and leaves the swarm. */
  stop (): Promise<void>
  /** The store, once stopped with `keepStore`, for the same set's next agent in this process. */
  keptStore (): KeptStore | undefined
  /** What its own process spent, when that is not this one: until its mount was up, and in all once stopped. */
  processUsage (): { readonly start?: Usage, readonly all?: Usage }
}

/** CPU seconds and context switches of a process. */
export interface Usage { readonly user: number, readonly system: number, readonly voluntary: number, readonly involuntary: number }

/** The kernel may cache entries, attributes and ENOENT answers this long: the content is immutable. */
const KERNEL_CACHE_SECONDS = 86_400

export class Agent implements RunningAgent {
  readonly kind = 'node'
  readonly options: AgentOptions
  private readonly swarm: SwarmNode
  private readonly fs: LibraryFs
  private readonly mounted: Mounted
  private stopping: Promise<void> | undefined

  static async start (options: AgentOptions): Promise<Agent> {
    const swarm = await SwarmNode.join(options.description, options.node, options.log)
    try {
      const fs = new LibraryFs(options.description, swarm, {
        mode: options.mode,
        uid: options.uid,
        gid: options.gid,
        onError: (op, file, err) => options.log(`${op} ${file} failed: ${formatError(err)}`)
      })
      const mounted = await mountFs(options.mountPoint, fs, {
        fsname: `p2prun:${options.description.name}`,
        allowOther: options.allowOther,
        cacheSeconds: KERNEL_CACHE_SECONDS,
        negativeCacheSeconds: KERNEL_CACHE_SECONDS,
        device: options.fuseDevice,
        log: options.log
      })
      return new Agent(options, swarm, fs, mounted)
    } catch (err) {
      await swarm.close()
      throw err
    }
  }

  private constructor (options: AgentOptions, swarm: SwarmNode, fs: LibraryFs, mounted: Mounted) {
    this.options = options
    this.swarm = swarm
    this.fs = fs
    this.mounted = mounted
    if (options.mode === 'eager') {
      swarm.fetchAll().catch((err: unknown) => {
        if (!this.stopping) options.log(`background fetch stopped: ${formatError(err)}`)
      })
    }
  }

  get mountPoint (): string {
    return this.mounted.mountPoint
  }

  get storePath (): string {
    return this.swarm.storePath
  }

  /** The store, once stopped with `keepStore`, for the same set's next agent in this process. */
  keptStore (): KeptStore {
    return this.swarm.keptStore()
  }

  processUsage (): Record<string, never> {
    return {}
  }

  stats (): Promise<AgentStats> {
    return Promise.resolve({
      infoHash: this.options.description.infoHash,
      mode: this.options.mode,
      mountPoint: this.mounted.mountPoint,
      fs: this.fs.stats(this.mounted.counters()),
      swarm: this.swarm.stats()
    })
  }

  /** Unmount first (so no reader waits on a closed swarm), then leave the swarm. */
  stop (): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.mounted.unmount()
      } finally {
        await this.swarm.close({ keepStore: this.options.keepStore })
      }
    })()
    return this.stopping
  }
}
