// Runs the real CLI in child processes, the way users and launchers do.
import { readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { execa, type ResultPromise } from 'execa'
import type { Test } from 'tap'
import { makeTree, type TreeSpec } from './fixtures.ts'
import { unlessStuck } from './stuck.ts'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
/** What users, launchers and Slurm run: the bundle in dist/ (`npm test` builds it first). */
export const CLI = path.join(ROOT, 'bin/p2prun')
/** The native node agent (native/agent/), built into dist/ beside the bundle. */
export const NATIVE_AGENT = path.join(ROOT, 'dist/p2prun-agent')

/** The env every child gets: no settings leaking in from the developer's shell. */
export function cleanEnv (extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('P2PRUN_') && v !== undefined) env[k] = v
  return { ...env, ...extra }
}

export function p2prun (args: readonly string[], opts: { cwd?: string, env?: Record<string, string> } = {}) {
  return unlessStuck(execa(CLI, args, {
    cwd: opts.cwd,
    env: cleanEnv(opts.env),
    extendEnv: false,
    reject: false,
    stdin: 'ignore'
  }), args)
}

/**
 * A tree made from `spec` in a test directory, DIR/NAME, described by the CLI into
 * DIR/NAME.p2p.torrent (the torrent is named after the directory, as stock clients expect).
 */
export async function describedTree (t: Test, spec: TreeSpec, name = 'libs') {
  const dir = t.testdir()
  const libs = await makeTree(path.join(dir, name), spec)
  const file = path.join(dir, `${name}.p2p.torrent`)
  const r = await p2prun(['describe', libs, '-o', file])
  t.equal(r.exitCode, 0, r.stderr)
  return { dir, libs, file, torrent: await readFile(file) }
}

/** Resolves with the first stdout line matching `pattern`; rejects if the process exits first. */
export function waitForLine (child: ResultPromise, pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    if (!child.stdout) return reject(new Error('child has no stdout'))
    const lines = createInterface({ input: child.stdout })
    let stderr = ''
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
    lines.on('line', (line) => {
      const m = line.match(pattern)
      if (m) { lines.close(); resolve(m) }
    })
    child.then((r) => reject(new Error(`exited (${r.exitCode}) before printing ${pattern}: ${stderr || r.stderr}`)),
      (err: Error) => reject(err))
  })
}

export interface Serving {
  readonly child: ResultPromise
  readonly tracker: string
  readonly seeder: string
  /** SIGTERM, then the "uploaded=" line's byte count. */
  stop (): Promise<number>
}

/**
 * The head's two seeders, for the tests of its rules: the native one (native/agent/seed.c, what
 * `p2prun serve` runs by default) and the Node one (lib/swarm/seeder.ts, `--agent node`).
 */
export const SEEDERS = [{ seeder: 'native', args: [] }, { seeder: 'Node', args: ['--agent', 'node'] }] as const

/**
 * `p2prun serve` on loopback; its teardown is the caller's t.teardown(serving.stop). Open to any
 * client unless given the job's `secret` (hex), which it then requires of every node.
 */
export async function serve (description: string, source: string, extra: readonly string[] = [], secret?: string): Promise<Serving> {
  const child = execa(CLI, ['serve', description, '--source', source, '--host', '127.0.0.1', ...(secret ? [] : ['--open']), ...extra], {
    env: cleanEnv(secret ? { P2PRUN_SECRET: secret } : {}), extendEnv: false, reject: false, stdin: 'ignore', buffer: { stdout: true, stderr: true }
  })
  const m = await waitForLine(child, /^serving infohash=\S+ tracker=(\S+) seeder=(\S+)$/)
  let stopped: Promise<number> | undefined
  return {
    child,
    tracker: m[1] ?? '',
    seeder: m[2] ?? '',
    stop: () => (stopped ??= (async () => {
      child.kill('SIGTERM')
      const r = await child
      const up = String(r.stdout).match(/^uploaded=(\d+)/m)
      return up ? Number(up[1]) : -1
    })())
  }
}
