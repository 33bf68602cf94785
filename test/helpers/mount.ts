// Mount agents in child processes (never in the test process: a blocked FUSE server must not be the
// process touching its own mount), with teardown that removes the mount even when a test fails.
import { readFile } from 'node:fs/promises'
import { execa, type ResultPromise } from 'execa'
import { isMounted, lazyUnmount } from '../../lib/mount.ts'
import path from 'node:path'
import type { Test } from 'tap'
import { CLI, cleanEnv, p2prun, serve, waitForLine, type Serving } from './cli.ts'
import { scratch, type Scratch } from './scratch.ts'

export interface MountedAgent {
  readonly child: ResultPromise
  readonly mountPoint: string
  /** What it wrote on stderr so far (lines written before a listener was added included). */
  stderrSoFar (): string
  /** SIGTERM, wait for exit; returns the --stats JSON and stderr. */
  stop (): Promise<{ stats: AgentStatsJson, stderr: string, exitCode: number | undefined }>
}

export interface AgentStatsJson {
  fs: {
    ops: Record<string, number>, enoent: number, bytesServedLocal: number, bytesServedAfterFetch: number, readErrors: number,
    readsForwarded: number, opensForwarded: number, interrupted: number, openedCompleteMs: number | null
    /** The native agent's: opens the kernel then read from the store itself (FUSE passthrough). */
    passthroughOpens?: number
  }
  /** failedPieces: the native agent's (pieces that failed their check). */
  swarm: { fromHead: number, fromPeers: number, uploaded: number, piecesHave: number, pieceCount: number, failedPieces?: number }
}

/** The agent's stats now: on SIGUSR1 it logs them as one stderr line. */
export function agentStats (agent: MountedAgent): Promise<AgentStatsJson> {
  const stderr = agent.child.stderr
  if (!stderr) throw new Error('the agent has no stderr')
  return new Promise((resolve, reject) => {
    let text = ''
    const onData = (chunk: Buffer) => {
      text += chunk.toString()
      const m = text.match(/^p2prun mount: stats (\{.*\})$/m)
      if (!m) return
      stderr.off('data', onData)
      resolve(JSON.parse(m[1] as string) as AgentStatsJson)
    }
    stderr.on('data', onData)
    agent.child.then((r) => reject(new Error(`the agent exited (${r.exitCode}): ${r.stderr}`)), reject)
    agent.child.kill('SIGUSR1')
  })
}

/** Asks for the agent's stats until `ready` holds (each answer paces the next question). */
export async function waitForStats (agent: MountedAgent, ready: (stats: AgentStatsJson) => boolean, tries = 2000): Promise<AgentStatsJson> {
  for (let i = 0; i < tries; i++) {
    const stats = await agentStats(agent)
    if (ready(stats)) return stats
  }
  throw new Error(`the agent's stats did not reach the expected state in ${tries} tries`)
}

/** The safety net: whatever happened to the agent, no mount stays behind. */
export async function ensureUnmounted (mountPoint: string): Promise<void> {
  if (await isMounted(mountPoint)) await lazyUnmount(mountPoint)
}

/**
 * `via` is a command prefix that execs the agent, e.g. `unshare --mount` for a mount namespace of
 * its own; `program` the agent: the CLI's `mount`, or the native agent's (NATIVE_AGENT).
 */
export async function mountAgent (scratch: Scratch, description: string, mountPoint: string, statsFile: string,
  args: readonly string[], env: Record<string, string> = {}, via: readonly string[] = [], program = CLI): Promise<MountedAgent> {
  const [command, ...prefix] = [...via, program]
  const child = execa(command as string, [...prefix, 'mount', description, mountPoint, '--stats', statsFile, ...args], {
    env: cleanEnv(env), extendEnv: false, reject: false, stdin: 'ignore'
  })
  let log = ''
  child.stderr?.on('data', (chunk: Buffer) => { log += chunk.toString() })
  let stopped: ReturnType<MountedAgent['stop']> | undefined
  const stop = () => (stopped ??= (async () => {
    child.kill('SIGTERM')
    const r = await child
    await ensureUnmounted(mountPoint)
    const text = await readFile(statsFile, 'utf8').catch(() => '{}')
    return { stats: JSON.parse(text) as AgentStatsJson, stderr: String(r.stderr), exitCode: r.exitCode }
  })())
  scratch.defer(stop)
  await waitForLine(child, /^mounted infohash=/)
  return { child, mountPoint, stderrSoFar: () => log, stop }
}

export interface Job extends Scratch { libs: string, file: string, head: Serving }

/** A scratch dir with a described library set and its head (tracker + seeder) running. */
export async function job (t: Test, libs: (dir: string) => Promise<string>, serveArgs: string[] = []): Promise<Job> {
  const s = await scratch(t)
  const source = await libs(s.dir)
  const file = path.join(s.dir, 'job.p2p.torrent')
  const made = await p2prun(['describe', source, '-o', file])
  t.equal(made.exitCode, 0, made.stderr)
  const head = await serve(file, source, serveArgs)
  s.defer(head.stop)
  return { ...s, libs: source, file, head }
}

export const nodeArgs = (j: Job, mode: string) => ['--mode', mode, '--tracker', j.head.tracker, '--seeder', j.head.seeder, '--store-dir', j.dir]
