// Other processes of a launch, seen from this one: whether one still runs, and stopping one.
// Another process's exit cannot be awaited in Node, so both look at /proc.
import { readFile } from 'node:fs/promises'
import { setTimeout as delay } from 'node:timers/promises'

const EXIT_POLL_MS = 20

/** SIGTERM a process and wait (at most `timeoutMs`) until it is gone; returns whether it exited. */
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
