// A scratch directory whose cleanups run last-registered-first, then the directory goes.
// tap's t.testdir() is removed by a teardown registered before any of ours, i.e. while a FUSE
// mount inside it may still be up; this one unmounts first.
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'

export interface Scratch {
  readonly dir: string
  defer (cleanup: () => Promise<unknown>): void
}

export async function scratch (t: Test): Promise<Scratch> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'p2prun-test-'))
  const cleanups: (() => Promise<unknown>)[] = []
  t.teardown(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
    await rm(dir, { recursive: true, force: true })
  })
  return { dir, defer: (cleanup) => { cleanups.push(cleanup) } }
}
