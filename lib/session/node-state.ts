// The run directory: what p2prun's processes on one node hand each other, as files. This module is
// the only one that names a file in it (test/layout.test.ts checks that no other module does):
//
//   job-<launch id>-<node>/     one launch's state on one node (NodeState)
//     agent.lock                made by whoever starts the node's agent: its first rank, or Slurm's prolog
//     ranks/<pid>               each rank's process, registered before anything can fail
//     ready.json                the agent's ReadyRecord, once its mount is up
//     failed.json               a FailureRecord, if the agent failed before that (the first failure wins)
//     task-env                  a rank's environment (rank-env.ts), one variable a line: NAME=VALUE
//                               sets it, NAME^=VALUE puts VALUE before the task's own (':'),
//                               NAME+=VALUE after it: the one file slurm/p2plibs.c reads
//     agent.log                 the agent's stdout and stderr
//     reported                  made by the one rank that reports the node's failure
//     left/<pid>                ranks that saw the failure and left
//   agent-<node>.sock           a lingering agent's socket: the node's next launch is handed to it (warm-agent.ts)
//   agent-<node>.json           that agent's WarmAgentRecord, while it lingers or serves
//   logs/<launch id>-<node>.log an agent's log, kept after a clean end with P2PRUN_DEBUG (lib/debug.ts)
//   <node>@<mount point>.json   a MountRecord: `p2prun mount`'s agent, for `p2prun umount`
//   <node>@<mount point>.log    the log of a `p2prun mount --daemon`
//
// Records cross between processes (and between a rank and an agent of the same installation) as
// JSON; a record that does not parse counts as absent or, for a failure, as an unreadable one.
import { watch } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { failureError, P2prunError, type FailureRecord } from '../errors.ts'
import { writeAtomic } from '../files.ts'
import { native, type Native } from '../native.ts'
import { isAlive } from './process.ts'
import type { TaskEnvEntry } from './job-spec.ts'

type WatchExit = Native['watchExit']

/** What the agent tells the node's ranks once its mount is up. */
export interface ReadyRecord {
  readonly mountPoint: string
  readonly pid: number
  /** Absent: the agent left no store to remove (the native one unlinks it at once). */
  readonly storePath?: string
}

const READY = 'ready.json'
const FAILED = 'failed.json'
const LOCK = 'agent.lock'
const TASK_ENV = 'task-env'
/** How task-env spells each operation. */
const TASK_ENV_OPS = { set: '=', prepend: '^=', append: '+=' } as const
const LOG = 'agent.log'
const REPORTED = 'reported'
const RANKS = 'ranks'
const LEFT = 'left'
const STATE_PREFIX = 'job-'
const KEPT_LOGS = 'logs'

/** Where node agents' logs are kept (P2PRUN_DEBUG), for help texts. */
export const KEPT_AGENT_LOGS = `RUN_DIR/${KEPT_LOGS}/LAUNCH-NODE.log`

/**
 * How often an agent without pidfds checks whether its ranks still run (ranksEnded): every 25 ms
 * while the ranks have changed (come, or gone) within the last 2 s, so a short job's launch ends
 * promptly; after that an eighth of the time since, up to once a second.
 * A check costs ~0.4 ms of CPU: at 25 ms for the life of a long job, an idle agent spent 3.8% of
 * a core (measured); a job that ends after a quiet time t waits at most t/8 (≤ 1 s) more.
 */
export function rankCheckMs (unchangedForMs: number): number {
  return unchangedForMs < 2000 ? 25 : Math.min(1000, unchangedForMs / 8)
}

export class NodeState {
  readonly dir: string

  /** Where keepLog puts the log. */
  readonly keptLogFile: string

  private constructor (runDir: string, name: string) {
    this.dir = path.join(runDir, `${STATE_PREFIX}${name}`)
    this.keptLogFile = path.join(runDir, KEPT_LOGS, `${name}.log`)
  }

  static of (runDir: string, launchId: string, nodeName: string): NodeState {
    return new NodeState(runDir, `${launchId}-${safeName(nodeName)}`)
  }

  get logFile (): string {
    return path.join(this.dir, LOG)
  }

  /** Made private to the launch's user: the mount and the ranks' pids are theirs. */
  async create (): Promise<void> {
    await mkdir(path.join(this.dir, RANKS), { recursive: true, mode: 0o700 })
  }

  /** The agent counts this rank's process from now on. */
  async register (pid: number): Promise<void> {
    await writeFile(path.join(this.dir, RANKS, String(pid)), '')
  }

  /**
   * Whether this process starts the node's agent: of the ranks (and Slurm's prolog) that ask at
   * once, exactly one is told yes.
   */
  claimAgent (): Promise<boolean> {
    return createOnce(path.join(this.dir, LOCK))
  }

  /** Whether this rank reports the agent's failure: one line per node, not one per rank. */
  claimReport (): Promise<boolean> {
    return createOnce(path.join(this.dir, REPORTED))
  }

  async ready (record: ReadyRecord, env: readonly TaskEnvEntry[]): Promise<void> {
    await writeFile(path.join(this.dir, TASK_ENV), env.map((e) => `${e.name}${TASK_ENV_OPS[e.op]}${e.value}\n`).join(''))
    await writeAtomic(path.join(this.dir, READY), JSON.stringify(record))
  }

  /** What the agent wrote for its ranks' environment (written before ready.json, so there once that is). */
  async readTaskEnv (): Promise<TaskEnvEntry[]> {
    const text = await readFile(path.join(this.dir, TASK_ENV), 'utf8')
    return text.split('\n').filter((line) => line !== '').map((line) => {
      const m = /^([^=^+]+)(\^=|\+=|=)(.*)$/.exec(line)
      if (!m) throw new P2prunError('LAUNCH', `${path.join(this.dir, TASK_ENV)} is damaged (a line reads ${JSON.stringify(line)})`)
      const op = (Object.keys(TASK_ENV_OPS) as TaskEnvEntry['op'][]).find((k) => TASK_ENV_OPS[k] === m[2]) as TaskEnvEntry['op']
      return { name: m[1] as string, op, value: m[3] as string }
    })
  }

  /** Records the agent's failure unless one is recorded already. */
  async fail (failure: FailureRecord): Promise<void> {
    await writeAtomic(path.join(this.dir, FAILED), JSON.stringify(failure), { exclusive: true }).catch(() => {})
  }

  readReady (): Promise<ReadyRecord | undefined> {
    return readJson<ReadyRecord>(path.join(this.dir, READY))
  }

  /**
   * Waits for the agent's ready or failure record, watching the directory; bounded by `timeoutMs`.
   * A failure becomes a P2prunError with the agent's own code and hint, prefixed by `who`.
   */
  async waitReady (who: string, timeoutMs: number): Promise<ReadyRecord> {
    const ac = new AbortController()
    const watcher = watch(this.dir, { signal: ac.signal })
    const changed = () => new Promise<void>((resolve) => watcher.once('change', () => resolve()))
    const deadline = setTimeout(() => ac.abort(), timeoutMs)
    try {
      for (;;) {
        const next = changed() // armed before looking, so no change between look and wait is missed
        const failed = await readJson<FailureRecord>(path.join(this.dir, FAILED))
        if (failed) throw failureError(failed, `${who}: the p2prun agent failed: `)
        const ready = await this.readReady()
        if (ready) return ready
        await Promise.race([next, new Promise((resolve) => ac.signal.addEventListener('abort', resolve))])
        if (ac.signal.aborted) {
          throw new P2prunError('LAUNCH', `${who}: the p2prun agent was not ready after ${timeoutMs / 1000} s`,
            { hint: `see ${this.logFile}; raise --start-timeout for very large library sets` })
        }
      }
    } finally {
      clearTimeout(deadline)
      ac.abort()
    }
  }

  /**
   * Resolves once at least `expected` ranks registered (1 if unknown) and none of them is alive.
   * Each rank's end is watched (native/exit-watch.c), and the registrations in the ranks directory:
   * nothing is polled. Where the kernel has no pidfd (Linux before 5.3), or there is no addon, the
   * ranks are polled (rankCheckMs).
   */
  async ranksEnded (expected: number, watchExit: WatchExit | undefined = native?.watchExit): Promise<void> {
    const ac = new AbortController()
    let wake = () => {}
    let watching = watchExit
    try {
      const watcher = watch(path.join(this.dir, RANKS), { signal: ac.signal })
      watcher.on('change', () => wake())
      watcher.on('error', () => {}) // the directory removed: the state goes, and the agent with it
    } catch {
      watching = undefined // no ranks directory (yet): looked for again and again
    }
    const watched = new Set<number>()
    const ended = new Set<number>()
    try {
      while (watching) {
        const next = new Promise<void>((resolve) => { wake = resolve }) // armed before looking, as waitReady's
        const pids = await this.rankPids()
        for (const pid of pids) {
          if (!watching || watched.has(pid)) continue
          watched.add(pid)
          try {
            if (!watching(pid, () => { ended.add(pid); wake() })) ended.add(pid)
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOSYS') throw err
            watching = undefined
          }
        }
        if (!watching) break
        if (pids.length >= Math.max(expected, 1) && pids.every((pid) => ended.has(pid))) return
        await next
      }
    } finally {
      ac.abort()
    }
    await this.ranksPolled(expected)
  }

  private async rankPids (): Promise<number[]> {
    return (await readdir(path.join(this.dir, RANKS)).catch(() => [])).map(Number)
  }

  /** ranksEnded by looking again and again: every rankCheckMs. */
  private async ranksPolled (expected: number): Promise<void> {
    let seen = ''
    let since = performance.now()
    for (;;) {
      const pids = await this.rankPids()
      let alive = pids.length
      if (pids.length >= Math.max(expected, 1)) {
        alive = (await Promise.all(pids.map((pid) => isAlive(pid)))).filter(Boolean).length
        if (alive === 0) return
      }
      const now = `${pids.length}/${alive}`
      if (now !== seen) since = performance.now()
      seen = now
      await delay(rankCheckMs(performance.now() - since))
    }
  }

  /**
   * A rank that saw the node's agent fail unregisters; the last one removes the node's state. Last
   * means none registered and, when the launcher says how many ranks the node has, that many have
   * left: a rank that registers after the others left would otherwise find no state, start a
   * second agent and report its failure again. Two ranks leaving at once may both find themselves
   * last: each removal then meets the other's half-done one (ENOTEMPTY), which rm's retries absorb.
   */
  async leaveFailed (pid: number, localSize: number | undefined): Promise<void> {
    await mkdir(path.join(this.dir, LEFT), { recursive: true })
    await writeFile(path.join(this.dir, LEFT, String(pid)), '')
    await rm(path.join(this.dir, RANKS, String(pid)), { force: true })
    const registered = await readdir(path.join(this.dir, RANKS)).catch(() => [])
    const left = await readdir(path.join(this.dir, LEFT)).catch(() => [])
    if (registered.length === 0 && left.length >= (localSize ?? 0)) await this.remove()
  }

  /** Moves the agent's log out of the state, to keptLogFile, before the state goes. */
  async keepLog (): Promise<void> {
    await mkdir(path.dirname(this.keptLogFile), { recursive: true, mode: 0o700 })
    await rename(this.logFile, this.keptLogFile)
  }

  async remove (): Promise<void> {
    await rm(this.dir, { recursive: true, force: true, maxRetries: 5 })
  }

  /** Whether any node state of this launch is left in `runDir` (agents here remove theirs once unmounted). */
  static async anyOf (runDir: string, launchId: string): Promise<boolean> {
    return (await readdir(runDir).catch(() => [])).some((n) => n.startsWith(`${STATE_PREFIX}${launchId}-`))
  }

  /** Resolves once no node state of the launch is left in `runDir`, or after `timeoutMs`. */
  static async launchGone (runDir: string, launchId: string, timeoutMs: number): Promise<void> {
    if (!(await NodeState.anyOf(runDir, launchId))) return
    const ac = new AbortController()
    const deadline = setTimeout(() => ac.abort(), timeoutMs)
    try {
      const watcher = watch(runDir, { signal: ac.signal })
      await new Promise<void>((resolve) => {
        const check = () => { void NodeState.anyOf(runDir, launchId).then((left) => { if (!left) resolve() }) }
        watcher.on('change', check)
        watcher.on('error', () => resolve())
        ac.signal.addEventListener('abort', () => resolve())
        check()
      })
    } finally {
      clearTimeout(deadline)
      ac.abort()
    }
  }
}

/** A node's agent that outlives its launch (warm-agent.ts): whom to signal to stop it. */
export interface WarmAgentRecord {
  readonly pid: number
  readonly socket: string
  /** The store it keeps for the next launch of the set it served last: removed by whoever finds it dead. */
  readonly store?: string
  /** The Slurm job whose launch started it: it serves no other job's, and that job's epilog stops it. */
  readonly slurmJob?: string
}

/** Where a lingering agent of `node` takes launches, and its record: one per node and run directory. */
export function warmAgentFiles (runDir: string, node: string): { socket: string, record: string } {
  const base = path.join(runDir, `agent-${safeName(node)}`)
  return { socket: `${base}.sock`, record: `${base}.json` }
}

export function readWarmAgentRecord (file: string): Promise<WarmAgentRecord | undefined> {
  return readJson<WarmAgentRecord>(file)
}

export function writeWarmAgentRecord (file: string, record: WarmAgentRecord): Promise<void> {
  return writeAtomic(file, JSON.stringify(record))
}

export async function removeWarmAgentRecord (file: string): Promise<void> {
  await rm(file, { force: true })
}

/** A `p2prun mount` agent, so `p2prun umount MOUNTPOINT` can find its process and store even when it died. */
export interface MountRecord {
  readonly node: string
  readonly pid: number
  readonly mountPoint: string
  /** Absent: the agent left no store to remove (the native one unlinks it at once). */
  readonly storePath?: string
  readonly infoHash: string
  /** A native agent detached by `--daemon`: no Node process removes its log after a clean stop. */
  readonly native?: true
}

/**
 * Keyed by node name and mount point: emulated nodes on one host mount the same path in their own
 * mount namespaces and share the run directory.
 */
function mountFile (runDir: string, node: string, mountPoint: string, ext: 'json' | 'log'): string {
  return path.join(runDir, `${encodeURIComponent(node)}@${encodeURIComponent(mountPoint)}.${ext}`)
}

export const mountLogPath = (runDir: string, node: string, mountPoint: string) => mountFile(runDir, node, mountPoint, 'log')

export async function writeMountRecord (runDir: string, record: MountRecord): Promise<void> {
  await mkdir(runDir, { recursive: true, mode: 0o700 })
  await writeAtomic(mountFile(runDir, record.node, record.mountPoint, 'json'), JSON.stringify(record))
}

/** A record cut short by a crash counts as absent: the mount table decides then. */
export function readMountRecord (runDir: string, node: string, mountPoint: string): Promise<MountRecord | undefined> {
  return readJson<MountRecord>(mountFile(runDir, node, mountPoint, 'json'))
}

export async function removeMountRecord (runDir: string, node: string, mountPoint: string): Promise<void> {
  await rm(mountFile(runDir, node, mountPoint, 'json'), { force: true })
}

/**
 * A node's name as a file name: each byte of its UTF-8 that is not a letter, digit, `_`, `.` or
 * `-` becomes `_`, as native/rank-step.c and native/agent/node-agent.c spell it.
 */
const safeName = (node: string) => [...Buffer.from(node)].map((b) => /[\w.-]/.test(String.fromCharCode(b)) && b < 0x80 ? String.fromCharCode(b) : '_').join('')

/** Whether this process created `file`: of many that try at once, exactly one does. */
async function createOnce (file: string): Promise<boolean> {
  try {
    await (await open(file, 'wx')).close()
    return true
  } catch {
    return false
  }
}

async function readJson<T> (file: string): Promise<T | undefined> {
  const text = await readFile(file, 'utf8').catch(() => undefined)
  if (!text) return undefined
  try {
    return JSON.parse(text) as T
  } catch {
    return undefined
  }
}
