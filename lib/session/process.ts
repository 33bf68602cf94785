// Other processes of a launch, seen from this one: the launcher run in the foreground, what a
// detached daemon says when it is ready, whether a process still runs, and stopping one (another
// process's exit cannot be awaited: /proc tells).
import { spawn, type ChildProcess } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { constants } from 'node:os'
import { setTimeout as delay } from 'node:timers/promises'
import { failureFromLine, P2prunError } from '../errors.ts'

const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/** Runs a launcher in the foreground; signals go to it (it stops the ranks); its exit code is ours. */
export function runForeground (program: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: 'inherit', env })
    const forward = (sig: NodeJS.Signals) => { child.kill(sig) }
    for (const sig of STOP_SIGNALS) process.on(sig, forward)
    child.on('error', (err) => reject(new P2prunError('LAUNCH', `cannot start ${program}: ${err.message}`)))
    child.on('exit', (code, signal) => {
      for (const sig of STOP_SIGNALS) process.off(sig, forward)
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0))
    })
  })
}

const EXIT_POLL_MS = 20

/**
 * What a detached daemon (`--notify-fd 3`: a Slurm job's head, `p2prun mount --daemon`) says on
 * its pipe: `ok [VALUE]` once ready (VALUE is returned), or `error RECORD`, its own failure
 * (thrown). A pipe that closes with neither: it died before it could say, and `died()` is thrown.
 */
export async function readyLine (child: ChildProcess, died: () => P2prunError): Promise<string> {
  let said = ''
  for await (const chunk of child.stdio[3] as NodeJS.ReadableStream) said += String(chunk)
  const line = said.trim()
  if (line.startsWith('error ')) throw failureFromLine(line.slice(6))
  if (line !== 'ok' && !line.startsWith('ok ')) throw died()
  return line.slice(2).trim()
}

/**
 * SIGTERM a child of ours and wait until it ended (`exited`); one still there after `timeoutMs` is
 * killed (SIGKILL) and waited for. Returns whether it had to be killed.
 */
export async function stopChild (child: ChildProcess, exited: Promise<void>, timeoutMs: number): Promise<boolean> {
  child.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  const late = await Promise.race([exited.then(() => false), new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), timeoutMs) })])
  clearTimeout(timer)
  if (!late) return false
  child.kill('SIGKILL')
  await exited
  return true
}

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
