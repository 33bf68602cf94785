// What every rank does before the user's program (bin/p2prun-rank runs it as `p2prun rank-prepare`):
// register the rank's process with this node's agent for the launch, start that agent if this is
// the node's first rank, wait until its mount is ready, check the program, and return what the
// shell then execs it with: the LD_LIBRARY_PATH, the program's path in the mount when the set was
// made from its load closure, and the audit module that sends the loader's other lookups there.
import { spawn } from 'node:child_process'
import { watch } from 'node:fs'
import { access, mkdir, open, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../lib/config.ts'
import { AlreadyReported, P2prunError } from '../lib/errors.ts'
import { findExecutable } from '../lib/files.ts'
import { decodeJob, JOB_ENV, launchIdOf, libraryPath, nodeIdentity, nodeStateDir, type JobSpec, type NodeIdentity } from '../lib/job.ts'

export const READY_FILE = 'ready.json'
export const FAILED_FILE = 'failed.json'
export const RANKS_DIR = 'ranks'
export const LOCK_FILE = 'agent.lock'
/** The library path as one line, for Slurm's task_init (the SPANK plugin reads it, C has no JSON). */
export const LDPATH_FILE = 'ldpath'
/** Created by the one rank of a node that reports the agent's failure; the node's other ranks stay quiet. */
const REPORTED_FILE = 'reported'
/** Ranks that saw the node's agent fail and left, one file per process. */
const LEFT_DIR = 'left'

export interface NodeReady {
  readonly mountPoint: string
  readonly pid: number
  readonly storePath: string
}

const launchError = (node: Pick<NodeIdentity, 'name'>, message: string, hint?: string) =>
  new P2prunError('LAUNCH', `node ${node.name}: ${message}`, { hint })

/** The audit module (native/audit.c), built into dist/ beside the bundle. */
const AUDIT_MODULE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'p2prun-audit.so')

export interface RankExec {
  readonly libraryPath: string
  /** The program's path in the mount, to exec instead of the name given; undefined: as given. */
  readonly program: string | undefined
  /** Environment to export: the audit module's (LD_AUDIT and its settings), PYTHONPATH. */
  readonly env: Readonly<Record<string, string>>
}

/** `pid` is the rank's own process (the shell that will become the program), not this helper. */
export async function prepareRank (program: readonly string[], pid: number, cli: readonly string[]): Promise<RankExec> {
  const job = decodeJob(process.env[JOB_ENV])
  const config = await loadConfig({ flags: {}, env: process.env, cwd: process.cwd() })
  const node = nodeIdentity(process.env, config.nodeName)
  const launchId = launchIdOf(job, process.env)
  const stateDir = nodeStateDir(config.runDir, launchId, node.name)
  await mkdir(path.join(stateDir, RANKS_DIR), { recursive: true, mode: 0o700 })
  // Registered before anything can fail: the agent counts this rank's process from now on.
  await writeFile(path.join(stateDir, RANKS_DIR, String(pid)), '')
  if (await startsAgent(stateDir)) startAgent(stateDir, node, launchId, cli)
  const ready = await waitForAgent(stateDir, node, config.startTimeoutMs).catch(async (err: unknown) => {
    // Claimed while this rank is still registered, so the state directory is still there.
    const first = await createOnce(path.join(stateDir, REPORTED_FILE))
    await leaveFailedNode(stateDir, pid, node.localSize)
    throw first ? err : new AlreadyReported()
  })
  const ldPath = libraryPath(ready.mountPoint, job.libDirs, process.env.LD_LIBRARY_PATH)
  const env = {
    // The program may want its own files from the mount (data beside the libraries, plugins).
    P2PRUN_MOUNT: ready.mountPoint,
    ...await auditEnv(ready.mountPoint, job, node),
    ...(job.pythonPath ? { PYTHONPATH: libraryPath(ready.mountPoint, job.pythonPath, process.env.PYTHONPATH) } : {})
  }
  if (job.program !== undefined) return { libraryPath: ldPath, program: path.join(ready.mountPoint, job.program), env }
  const name = program[0] as string
  if (!(await findExecutable(name, process.env))) throw launchError(node, `program ${name} not found or not executable`, 'give a path, or put it on PATH on every node')
  return { libraryPath: ldPath, program: undefined, env }
}

/**
 * LD_AUDIT for a rank whose set came from its program's closure: DT_RPATH (searched before
 * LD_LIBRARY_PATH) and absolute dlopen paths would otherwise load from the shared file system. A
 * program's own LD_AUDIT modules stay, before ours. Without the module (not built) the launch goes
 * on with LD_LIBRARY_PATH alone, and rank 0 says so once.
 */
async function auditEnv (mountPoint: string, job: JobSpec, node: NodeIdentity): Promise<Record<string, string> | undefined> {
  if (!job.redirect) return undefined
  if (!(await exists(AUDIT_MODULE))) {
    if (node.rank === 0) process.stderr.write(`p2prun: warning: ${AUDIT_MODULE} is missing: libraries found through DT_RPATH or loaded by absolute path come from their original place (hint: rebuild with npm run build)\n`)
    return undefined
  }
  const previous = process.env.LD_AUDIT
  return {
    LD_AUDIT: previous ? `${previous}:${AUDIT_MODULE}` : AUDIT_MODULE,
    P2PRUN_AUDIT_MOUNT: mountPoint,
    P2PRUN_AUDIT_WHOLE: job.redirect.whole.join(':'),
    P2PRUN_AUDIT_SOME: job.redirect.some.join(':')
  }
}

/**
 * Exactly one process starts a node's agent: whoever creates the lock first — a rank, or Slurm's
 * prolog before any rank exists (then every rank finds the agent already there).
 */
async function startsAgent (stateDir: string): Promise<boolean> {
  return createOnce(path.join(stateDir, LOCK_FILE))
}

/** Whether this process created `file`: of many that try at once, exactly one does. */
async function createOnce (file: string): Promise<boolean> {
  try {
    await (await open(file, 'wx')).close()
    return true
  } catch {
    return false
  }
}

function startAgent (stateDir: string, node: NodeIdentity, launchId: string, cli: readonly string[]): void {
  const logFile = path.join(stateDir, 'agent.log')
  const [file, ...args] = cli as [string, ...string[]]
  void open(logFile, 'a').then((log) => {
    const agent = spawn(file, [...args, 'node-agent', stateDir, '--node', node.name, '--launch-id', launchId, '--expect', String(node.localSize ?? 0)], {
      detached: true, // the agent outlives this process, which becomes the user's program
      stdio: ['ignore', log.fd, log.fd],
      env: process.env
    })
    void log.close()
    // An agent that dies before it is ready cannot say so itself: its last error line goes on record.
    agent.on('exit', () => { void recordEarlyExit(stateDir, logFile) })
    agent.unref()
  })
}

async function recordEarlyExit (stateDir: string, logFile: string): Promise<void> {
  if (await exists(path.join(stateDir, READY_FILE))) return
  const lines = (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n')
  const reason = lines.reverse().find((l) => l.includes('error:'))?.replace(/^p2prun [\w-]+: error: /, '') ?? 'the node agent exited'
  await writeFile(path.join(stateDir, FAILED_FILE), JSON.stringify({ error: reason }), { flag: 'wx' }).catch(() => {})
}

/** Waits for ready.json or failed.json, by watching the state directory; bounded by `timeoutMs`. */
export async function waitForAgent (stateDir: string, node: Pick<NodeIdentity, 'name'>, timeoutMs: number): Promise<NodeReady> {
  const ac = new AbortController()
  const watcher = watch(stateDir, { signal: ac.signal })
  const changed = () => new Promise<void>((resolve) => watcher.once('change', () => resolve()))
  const deadline = setTimeout(() => ac.abort(), timeoutMs)
  try {
    for (;;) {
      const next = changed() // armed before looking, so no change between look and wait is missed
      const failed = await readJson<{ error: string }>(path.join(stateDir, FAILED_FILE))
      if (failed) throw launchError(node, `the p2prun agent failed: ${failed.error}`)
      const ready = await readJson<NodeReady>(path.join(stateDir, READY_FILE))
      if (ready) return ready
      await Promise.race([next, new Promise((resolve) => ac.signal.addEventListener('abort', resolve))])
      if (ac.signal.aborted) {
        throw launchError(node, `the p2prun agent was not ready after ${timeoutMs / 1000} s`,
          `see ${path.join(stateDir, 'agent.log')}; raise --start-timeout for very large library sets`)
      }
    }
  } finally {
    clearTimeout(deadline)
    ac.abort()
  }
}

async function readJson<T> (file: string): Promise<T | undefined> {
  const text = await readFile(file, 'utf8').catch(() => undefined)
  return text ? JSON.parse(text) as T : undefined
}

async function exists (file: string): Promise<boolean> {
  return access(file).then(() => true, () => false)
}

/**
 * Each rank that saw the failure unregisters; the last one removes the node's state. Last means
 * none registered and, when the launcher says how many ranks the node has, that many have left:
 * a rank that registers after the others left would otherwise find no state, start a second
 * agent and report its failure again. Two ranks leaving at once may both find themselves last:
 * each removal then meets the other's half-done one (ENOTEMPTY), which rm's retries absorb.
 */
async function leaveFailedNode (stateDir: string, pid: number, localSize: number | undefined): Promise<void> {
  await mkdir(path.join(stateDir, LEFT_DIR), { recursive: true })
  await writeFile(path.join(stateDir, LEFT_DIR, String(pid)), '')
  await rm(path.join(stateDir, RANKS_DIR, String(pid)), { force: true })
  const registered = await readdir(path.join(stateDir, RANKS_DIR)).catch(() => [])
  const left = await readdir(path.join(stateDir, LEFT_DIR)).catch(() => [])
  if (registered.length === 0 && left.length >= (localSize ?? 0)) await rm(stateDir, { recursive: true, force: true, maxRetries: 5 })
}
