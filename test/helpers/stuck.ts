// A p2prun command a test runs that has not ended long after any test needs: it is stuck. Rather
// than let tap's file timeout end the whole file with no word on which command hung or where, this
// says what the command's processes were doing (state, kernel wait channel, kernel stack where
// readable), then stops it (SIGTERM, so it can clean up; SIGKILL if that does not end it), so the
// test's own assertion fails with the command's output.
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import type { ResultPromise } from 'execa'

/** Well past the longest command in the suite (a launch that waits out a 30 s stall), well within tap's 300 s per file. */
const STUCK_AFTER_MS = 150_000
const KILL_AFTER_MS = 10_000

export function unlessStuck<T extends ResultPromise> (child: T, args: readonly string[]): T {
  const timer = setTimeout(() => { void stop(child, args) }, STUCK_AFTER_MS)
  timer.unref()
  child.then(() => clearTimeout(timer), () => clearTimeout(timer))
  return child
}

async function stop (child: ResultPromise, args: readonly string[]): Promise<void> {
  const pid = child.pid
  if (pid === undefined) return
  const report = await describeTree(pid).catch((err: Error) => `(could not read its processes: ${err.message})`)
  console.error(`test helper: \`p2prun ${args.join(' ')}\` has not ended after ${STUCK_AFTER_MS / 1000} s; stopping it. Its processes:\n${report}`)
  child.kill('SIGTERM')
  const hard = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS)
  hard.unref()
}

/** Each process of the tree under `pid`: ps's line, then its kernel stack if this user may read it. */
async function describeTree (pid: number): Promise<string> {
  const { stdout } = await promisify(execFile)('ps', ['-e', '-o', 'pid=,ppid=,stat=,wchan:32=,etimes=,args='])
  const rows = stdout.split('\n').filter((l) => l.trim() !== '').map((line) => {
    const [p, pp] = line.trim().split(/\s+/)
    return { pid: Number(p), ppid: Number(pp), line: line.trim() }
  })
  const tree = new Set([pid])
  for (let grew = true; grew;) {
    grew = false
    for (const r of rows) if (tree.has(r.ppid) && !tree.has(r.pid)) { tree.add(r.pid); grew = true }
  }
  const out: string[] = []
  for (const r of rows.filter((r) => tree.has(r.pid))) {
    out.push(`  ${r.line}`)
    const stack = await readFile(`/proc/${r.pid}/stack`, 'utf8').catch(() => '')
    for (const frame of stack.split('\n').filter(Boolean).slice(0, 12)) out.push(`      ${frame}`)
  }
  return out.join('\n')
}
