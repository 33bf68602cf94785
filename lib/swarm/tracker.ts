// The job's tracker: bittorrent-tracker over HTTP only, restricted to the job's infohashes, with
// limits sized for large jobs.
import { Server } from 'bittorrent-tracker'
import { P2prunError } from '../errors.ts'
import { isHeadPeerId } from './peer-id.ts'

export interface TrackerOptions {
  readonly host: string
  readonly port: number
  /** The only infohashes it will track (hex). */
  readonly infoHashes: readonly string[]
  /** Description files it hands out at DESCRIPTION_PATH/<infohash>.torrent, so nodes need no shared FS. */
  readonly descriptions?: ReadonlyMap<string, Uint8Array>
  /** POST DESCRIPTION_PATH + 'stop/<token>' calls this: how a job's epilog stops a head it cannot signal. */
  readonly stop?: { readonly token: string, readonly onStop: () => void }
  readonly maxPeers: number
  readonly announcePeers: number
}

export interface Tracker {
  readonly port: number
  /** Peers currently registered for an infohash. */
  peerCount (infoHash: string): number
  /** ms since the tracker started at which each peer announced it had everything. */
  completions (): readonly number[]
  close (): Promise<void>
}

export const DESCRIPTION_PATH = '/p2prun/'

export async function startTracker (opts: TrackerOptions): Promise<Tracker> {
  const allowed = new Set(opts.infoHashes.map((h) => h.toLowerCase()))
  const server = new Server({
    http: true,
    udp: false,
    ws: false,
    stats: false,
    peersCacheLength: opts.maxPeers,
    // Nodes re-announce at this interval; a whole job fits in it, and peers that leave say so.
    interval: 5 * 60 * 1000,
    filter: (infoHash, params, cb) => {
      if (!allowed.has(infoHash)) return cb(new Error(`this tracker serves only its job's description; unknown infohash ${infoHash}`))
      // The parser clamps numwant to 82 before we see it; the raw request still has the asked value.
      const asked = Number(new URL(params.httpReq?.url ?? '/', 'http://x').searchParams.get('numwant'))
      params.numwant = Math.min(asked || params.numwant, opts.announcePeers)
      cb(null)
    }
  })
  // A bad announce is the client's problem, answered with a failure reason; never fatal here.
  server.on('warning', () => {})
  // bittorrent-tracker attaches its own request handler on the next tick; this one runs first.
  server.http?.on('request', (req, res) => {
    if (!req.url?.startsWith(DESCRIPTION_PATH)) return
    if (opts.stop && req.method === 'POST' && req.url === `${DESCRIPTION_PATH}stop/${opts.stop.token}`) {
      res.end('stopping\n')
      opts.stop.onStop()
      return
    }
    const body = opts.descriptions?.get(req.url.slice(DESCRIPTION_PATH.length).replace(/\.torrent$/, '').toLowerCase())
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/x-bittorrent' })
    res.end(body ?? 'unknown description')
  })
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new P2prunError('TRACKER', `tracker cannot listen on ${opts.host}:${opts.port}: ${err.code ?? err.message}`,
        { hint: 'choose another --tracker-port or free that one', cause: err }))
    }
    server.once('error', onError)
    server.listen(opts.port, opts.host, () => { server.off('error', onError); resolve() })
  })
  const address = server.http?.address()
  const port = typeof address === 'object' && address ? address.port : opts.port
  const started = performance.now()
  const completed: number[] = []
  server.on('complete', (_addr: string, params: { peer_id?: string }) => {
    if (!isHeadPeerId(params.peer_id)) completed.push(Math.round(performance.now() - started))
  })
  let closing: Promise<void> | undefined
  return {
    port,
    completions: () => completed,
    peerCount: (infoHash) => server.torrents[infoHash.toLowerCase()]?.peers.length ?? 0,
    close: () => (closing ??= new Promise<void>((resolve) => server.close(() => resolve())))
  }
}
