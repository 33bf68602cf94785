// Where a mount agent records itself, so `p2prun umount MOUNTPOINT` can find its process and store
// even when that process died. One JSON file per mount point in the run directory.
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'

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
  const file = statePath(runDir, state.node, state.mountPoint)
  await writeFile(`${file}.tmp-${process.pid}`, JSON.stringify(state))
  await rename(`${file}.tmp-${process.pid}`, file)
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
