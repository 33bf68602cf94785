// `p2prun -n N …` launches confined to a scratch directory: their run dir, stores and mount points
// live there, so a test can check that nothing of a launch is left, and clean up if something is.
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { execa } from 'execa'
import { isMounted, lazyUnmount } from '../../lib/mount.ts'
import { CLI, cleanEnv } from './cli.ts'
import { unlessStuck } from './stuck.ts'
import type { Test } from 'tap'
import type { Scratch } from './scratch.ts'

export interface LaunchDirs {
  readonly run: string
  readonly mounts: string
}

export function launchDirs (s: Scratch): LaunchDirs {
  const dirs = { run: path.join(s.dir, 'run'), mounts: path.join(s.dir, 'mnt') }
  s.defer(() => unmountAllUnder(s.dir))
  return dirs
}

/** Runs p2prun as a user would, with this test's run dir, store dir and mount points. */
export function launch (s: Scratch, dirs: LaunchDirs, args: readonly string[], env: Record<string, string> = {}) {
  const argv = ['--mount-point', `${dirs.mounts}/%j-%n`, ...args]
  return inLaunchDirs(s, dirs, CLI, argv, argv, env)
}

/** Runs shell commands (what `p2prun --dry-run` printed) as `launch` runs p2prun: same directories and environment. */
export function inShell (s: Scratch, dirs: LaunchDirs, script: string, env: Record<string, string> = {}) {
  const argv = ['-e', '-c', script]
  return inLaunchDirs(s, dirs, 'sh', argv, ['sh', ...argv], env)
}

/** `file args` in the test's scratch directory, with its run and store directories; `shown` names it if it gets stuck. */
function inLaunchDirs (s: Scratch, dirs: LaunchDirs, file: string, args: readonly string[], shown: readonly string[], env: Record<string, string>) {
  return unlessStuck(execa(file, args, {
    env: cleanEnv({ P2PRUN_RUN_DIR: dirs.run, P2PRUN_STORE_DIR: s.dir, ...env }),
    extendEnv: false, reject: false, stdin: 'ignore', cwd: s.dir
  }), shown)
}

export async function mountsUnder (dir: string): Promise<string[]> {
  const table = await readFile('/proc/self/mounts', 'utf8')
  return table.split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(`${dir}/`))
}

async function unmountAllUnder (dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) if (await isMounted(m)) await lazyUnmount(m)
}

/** Nothing of the launch is left: no mount, no agent state, no store, no mount point. */
export async function nothingLeft (t: Test, s: { dir: string }, dirs: { run: string, mounts: string }) {
  t.same(await mountsUnder(s.dir), [], 'no mount left')
  t.same(await readdir(dirs.run).catch(() => []), [], 'no agent state left')
  t.same(await readdir(dirs.mounts).catch(() => []), [], 'no mount point left')
  t.same((await readdir(s.dir)).filter((n) => n.startsWith('p2prun-')), [], 'no store left')
}
