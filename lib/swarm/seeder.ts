// The head's seeder: serves the source directory to the swarm, straight from the source files.
import { stat } from 'node:fs/promises'
import WebTorrent, { type Torrent, type Wire } from 'webtorrent'
import { sourcePath, type SourceLayout } from '../describe.ts'
import type { Description } from '../description.ts'
import { P2prunError, sourceError } from '../errors.ts'
import { SourceChunkStore, type SourceFile } from './chunk-stores.ts'
import { clientOptions, torrentOptions, tuneConnections } from './tuning.ts'

export interface SeederOptions {
  readonly port: number
  readonly trackers: readonly string[]
  readonly maxConns: number
  /** Hash every piece of the source even when sizes and mtimes match the description. */
  readonly verify: boolean
  /** Bytes per second the seeder may upload; 0 for no limit (emulates a slow head link). */
  readonly uploadLimit: number
  /**
   * The head sends each piece to one node at a time: another node asking for a piece the head
   * started sending less than this long ago gets a BEP 6 reject and fetches it from the first
   * node once that node has it. Without this, nodes that load the same libraries in the same
   * order all ask the head for the same piece at once. 0: off.
   */
  readonly deferToPeersMs: number
}

export interface Seeder {
  readonly port: number
  /** Whether the source was hashed at start (false: sizes and mtimes matched). */
  readonly verified: boolean
  uploaded (): number
  /** The most bytes sent to any one peer: how much of the set a node got from the head at worst. */
  maxToOnePeer (): number
  close (): Promise<void>
}


export async function startSeeder (desc: Description, layout: SourceLayout, opts: SeederOptions): Promise<Seeder> {
  const cheapMatch = await sourceMatches(desc, layout)
  const verify = opts.verify || !cheapMatch
  const sourceFiles: SourceFile[] = desc.entries
    .filter((e) => e.torrentFile !== undefined)
    .map((e) => ({ path: sourcePath(layout, e.path), offset: e.torrentOffset ?? 0, length: e.size }))
  const root = layout.dirs.map((d) => d.dir).join(', ')

  // Filled once the torrent is ready: start-up verification reads must never be deferred.
  let defer: (index: number) => boolean = () => false
  const client = new WebTorrent({
    ...clientOptions({ role: 'head', port: opts.port, maxConns: opts.maxConns, numwant: 1 }),
    ...(opts.uploadLimit > 0 ? { uploadLimit: opts.uploadLimit } : {})
  })
  const close = () => new Promise<void>((resolve) => client.destroy(() => resolve()))
  try {
    const torrent = await addSeed(client, desc, {
      ...torrentOptions(),
      announce: [...opts.trackers],
      store: SourceChunkStore,
      storeOpts: { sourceFiles, defer: (index: number) => defer(index) },
      // No piece cache: every request must reach the store's defer check (the page cache keeps the bytes).
      storeCacheSlots: 0,
      skipVerify: !verify
    })
    const missing = countMissing(torrent, desc.pieceCount)
    if (missing > 0) {
      throw sourceError(`${root} does not match the description: ${missing} of ${desc.pieceCount} pieces differ`,
        'describe the directory again, or point --source at the directory it was described from')
    }
    await listening(client)
    if (opts.deferToPeersMs > 0) defer = onePeerAtATime(torrent, opts.deferToPeersMs)
    const toPeer = new Map<string, number>()
    torrent.on('wire', (wire: Wire) => {
      wire.on('upload', (bytes: number) => {
        const id = wire.peerId ?? ''
        toPeer.set(id, (toPeer.get(id) ?? 0) + bytes)
      })
    })
    return {
      port: client.torrentPort,
      verified: verify,
      uploaded: () => torrent.uploaded,
      maxToOnePeer: () => Math.max(0, ...toPeer.values()),
      close
    }
  } catch (err) {
    await close()
    throw err
  }
}

/**
 * Cheap check that the source is what was described: every file present with the described size
 * (a size mismatch is fatal) and mtime (a mismatch only means "hash it to be sure").
 */
async function sourceMatches (desc: Description, layout: SourceLayout): Promise<boolean> {
  let same = true
  for (const e of desc.entries) {
    if (e.torrentFile === undefined) continue
    const file = sourcePath(layout, e.path)
    const st = await stat(file).catch(() => undefined)
    if (!st?.isFile()) {
      throw sourceError(`${file} is in the description but not in the source`, 'pass the directory the description was made from')
    }
    if (st.size !== e.size) {
      throw sourceError(`${file} has ${st.size} bytes, the description says ${e.size}`,
        'describe the directory again: it changed since the description was made')
    }
    if (Math.trunc(st.mtimeMs) !== e.mtimeMs) same = false
  }
  return same
}

/**
 * Whether to turn down a request for `index` because another node is getting it from the head.
 * webtorrent gives the chunk store no peer, so the wire is noted by a 'request' listener that runs
 * just before webtorrent's own (ours is added on 'wire', webtorrent's after it), which then calls
 * store.get, and with it this check, synchronously.
 */
function onePeerAtATime (torrent: Torrent, windowMs: number): (index: number) => boolean {
  const sentTo = new Map<number, { wire: Wire, at: number }>()
  let requester: Wire | undefined
  torrent.on('wire', (wire: Wire) => {
    wire.on('request', () => { requester = wire })
  })
  return (index) => {
    const now = performance.now()
    const first = sentTo.get(index)
    if (first === undefined || now - first.at >= windowMs || (first.wire as unknown as { destroyed: boolean }).destroyed) {
      if (requester) sentTo.set(index, { wire: requester, at: now })
      return false
    }
    return first.wire !== requester
  }
}

function countMissing (torrent: Torrent, pieceCount: number): number {
  let missing = 0
  for (let i = 0; i < pieceCount; i++) if (!torrent.bitfield.get(i)) missing++
  return missing
}

function addSeed (client: WebTorrent, desc: Description, options: Parameters<WebTorrent['add']>[1]): Promise<Torrent> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new P2prunError('SWARM', `seeder failed: ${err.message}`, { cause: err }))
    client.once('error', onError)
    const torrent = client.add(desc.torrent, options)
    tuneConnections(torrent, client.peerId)
    torrent.once('error', onError)
    torrent.once('ready', () => { client.off('error', onError); resolve(torrent) })
  })
}

async function listening (client: WebTorrent): Promise<void> {
  if (client.address()) return
  await new Promise<void>((resolve, reject) => {
    client.once('listening', resolve)
    client.once('error', (err: NodeJS.ErrnoException) => reject(new P2prunError('SWARM',
      `seeder cannot listen: ${err.code ?? err.message}`, { hint: 'choose another --seeder-port', cause: err })))
  })
}
