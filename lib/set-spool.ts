// The sets a system-wide head serves (`p2prun serve --sets DIR`): a directory where each set is a
// description beside the directory it was made from, NAME.p2p.torrent and NAME (a directory, or a
// link to one). Adding the pair serves the set; removing the description stops it; a changed
// description replaces it. A pair that does not serve (no source beside it, a damaged description,
// a source that no longer matches) is reported once and skipped until its description changes.
import { watch } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { DESCRIPTION_SUFFIX, readDescription } from './description-file.ts'
import { formatError, sourceError } from './errors.ts'
import type { SetHead } from './head.ts'
import { layoutOf } from './source-layout.ts'

/** Writers create and rename files in steps: look once the directory has been quiet this long. */
const SETTLE_MS = 100

interface Served {
  readonly infoHash: string | undefined
  /** The description's mtime when it was last looked at: a change means look again. */
  readonly mtimeMs: number
}

export interface SpoolEvents {
  serving (name: string, infoHash: string, seeder: string): void
  stopped (name: string, infoHash: string): void
  refused (name: string, reason: string): void
}

/** Serves DIR's sets on `head` until `signal` aborts; resolves once the first look is done. */
export async function serveSpool (dir: string, head: SetHead, events: SpoolEvents, signal: AbortSignal): Promise<void> {
  const served = new Map<string, Served>()
  let running: Promise<void> = Promise.resolve()
  let timer: NodeJS.Timeout | undefined
  const look = () => { running = running.then(() => sync(dir, head, served, events)) }
  watch(dir, { signal }).on('change', () => {
    clearTimeout(timer)
    timer = setTimeout(look, SETTLE_MS)
  }).on('error', () => {})
  signal.addEventListener('abort', () => clearTimeout(timer))
  look()
  await running
}

async function sync (dir: string, head: SetHead, served: Map<string, Served>, events: SpoolEvents): Promise<void> {
  const names = (await readdir(dir).catch(() => [])).filter((n) => n.endsWith(DESCRIPTION_SUFFIX)).map((n) => n.slice(0, -DESCRIPTION_SUFFIX.length))
  for (const [name, set] of served) {
    if (names.includes(name)) continue
    served.delete(name)
    if (set.infoHash) {
      await head.remove(set.infoHash)
      events.stopped(name, set.infoHash)
    }
  }
  for (const name of names) {
    const file = path.join(dir, `${name}${DESCRIPTION_SUFFIX}`)
    const mtimeMs = await stat(file).then((s) => s.mtimeMs, () => undefined)
    const known = served.get(name)
    if (mtimeMs === undefined || known?.mtimeMs === mtimeMs) continue
    if (known?.infoHash) {
      await head.remove(known.infoHash)
      events.stopped(name, known.infoHash)
    }
    try {
      const source = path.join(dir, name)
      if (!(await stat(source).then((s) => s.isDirectory(), () => false))) {
        throw sourceError(`no directory ${source} beside it`, `link the directory the set was described from there: ln -s DIR ${source}`)
      }
      const desc = await readDescription(file)
      const seeder = await head.add(desc, layoutOf([source]))
      served.set(name, { infoHash: desc.infoHash, mtimeMs })
      events.serving(name, desc.infoHash, seeder)
    } catch (err) {
      served.set(name, { infoHash: undefined, mtimeMs })
      events.refused(name, formatError(err))
    }
  }
}
