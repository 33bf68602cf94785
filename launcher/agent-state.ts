// Where a mount agent records itself, so `p2prun umount MOUNTPOINT` can find its process and store
// even when that process died. One JSON file per mount point in the run directory.
import { mkdir, readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { writeAtomic } from '../lib/files.ts'

export interface AgentState {
  readonly node: string
  readonly pid: number
  readonly mountPoint: string
  readonly storePath: string
  readonly infoHash: string
}

/**
 * Keyed by node name and mount point: emulated nodes on one host mount the same path in their own
 * mount namespaces and share the run directory.
 */
function statePath (runDir: string, node: string, mountPoint: string): string {
  return path.join(runDir, `${encodeURIComponent(node)}@${encodeURIComponent(mountPoint)}.json`)
}

export function logPath (runDir: string, node: string, mountPoint: string): string {
  return path.join(runDir, `${encodeURIComponent(node)}@${encodeURIComponent(mountPoint)}.log`)
}

export async function writeState (runDir: string, state: AgentState): Promise<void> {
  await mkdir(runDir, { recursive: true, mode: 0o700 })
  await writeAtomic(statePath(runDir, state.node, state.mountPoint), JSON.stringify(state))
}

export async function readState (runDir: string, node: string, mountPoint: string): Promise<AgentState | undefined> {
  const text = await readFile(statePath(runDir, node, mountPoint), 'utf8').catch(() => undefined)
  if (text === undefined) return undefined
  try {
    return JSON.parse(text) as AgentState
  } catch {
    return undefined // a state file cut short by a crash: treat as absent, the mount table decides
  }
}

export async function removeState (runDir: string, node: string, mountPoint: string): Promise<void> {
  await rm(statePath(runDir, node, mountPoint), { force: true })
}

const EXIT_POLL_MS = 20

/**
 * SIGTERM a process and wait (at most `timeoutMs`) until it is gone. Another process's exit cannot be
 * awaited in Node, so this polls; returns whether it exited.
 */
export async function terminate (pid: number, timeoutMs: number): Promise<boolean> {
  if (!(await isAlive(pid))) return true
  process.kill(pid, 'SIGTERM')
  const deadline = Date.now() + timeoutMs
  while (await isAlive(pid)) {
    if (Date.now() >= deadline) return false
    await delay(EXIT_POLL_MS)
  }
  return true
}

/** Alive and not a zombie (a killed agent lingers as one until its parent reaps it). */
export async function isAlive (pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  return stat !== '' && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
}
