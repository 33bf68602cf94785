// Announcing to the job's HTTP trackers (BEP 3, compact peer lists of BEP 23): at start, when the
// set is complete, at the tracker's interval, and when leaving. A tracker that fails is reported
// once and retried within seconds (a head restarting, a first wave of nodes it answers late), not
// at the next interval; the head's seeder address, handed out at launch, does not depend on it.
import bencode from 'bencode'
import { decodeCompact } from './peer-address.ts'
import { withProof, type JobSecret } from './job-auth.ts'

// Importing node:http as an ES module evaluates every export, WebSocket's among them, which loads
// undici: 7 ms of each node agent's start. The CommonJS module object has them as lazy getters.
const http = process.getBuiltinModule('node:http')

export type AnnounceEvent = 'started' | 'completed' | 'stopped' | undefined

/**
 * An announce with this parameter set to 1 only asks for peers: the peer is not registered. A
 * node that has no description yet peeks, to find peers to get it from: everyone registered has it.
 */
export const PEEK_PARAM = 'p2prun_peek'

export interface Progress {
  readonly uploaded: number
  readonly downloaded: number
  readonly left: number
}

export interface AnnouncerOptions {
  readonly trackers: readonly string[]
  readonly infoHash: Buffer
  readonly peerId: Buffer
  /** The port peers reach us on. */
  readonly port: number
  readonly numwant: number
  readonly progress: () => Progress
  /** host:port of peers the tracker listed. */
  readonly onPeers: (addresses: string[]) => void
  readonly onWarning: (message: string) => void
  /** The job's secret: each announce carries its proof (the tracker refuses others). */
  readonly secret?: JobSecret
}

const REQUEST_TIMEOUT_MS = 10_000
/** Leaving must not hold up an agent's exit for long. */
const STOP_TIMEOUT_MS = 1000
const DEFAULT_INTERVAL_S = 300
/** A failed announce is retried after this, doubling up to RETRY_MAX_MS, each wait jittered by ±50%. */
const RETRY_MS = 1000
const RETRY_MAX_MS = 60_000

export class Announcer {
  private readonly opts: AnnouncerOptions
  private readonly timers = new Map<string, NodeJS.Timeout>()
  /** Failed announces in a row, by tracker. */
  private readonly failures = new Map<string, number>()
  private stopped = false

  constructor (opts: AnnouncerOptions) {
    this.opts = opts
  }

  start (): void {
    for (const tracker of this.opts.trackers) void this.announce(tracker, 'started')
  }

  completed (): void {
    for (const tracker of this.opts.trackers) void this.announce(tracker, 'completed')
  }

  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    for (const timer of this.timers.values()) clearTimeout(timer)
    await Promise.all(this.opts.trackers.map((tracker) => this.request(tracker, 'stopped', STOP_TIMEOUT_MS).catch(() => {})))
  }

  private async announce (tracker: string, event: AnnounceEvent): Promise<void> {
    let waitMs = DEFAULT_INTERVAL_S * 1000
    try {
      const reply = await this.request(tracker, event, REQUEST_TIMEOUT_MS)
      if (this.stopped) return
      const failure = reply['failure reason']
      if (failure !== undefined) {
        this.opts.onWarning(`tracker ${tracker} refused the announce: ${text(failure)}`)
      } else {
        if (typeof reply.interval === 'number' && reply.interval > 0) waitMs = reply.interval * 1000
        this.failures.delete(tracker)
        this.opts.onPeers(peersOf(reply.peers))
      }
    } catch (err) {
      if (this.stopped) return
      const failures = (this.failures.get(tracker) ?? 0) + 1
      this.failures.set(tracker, failures)
      if (failures === 1) this.opts.onWarning(`tracker ${tracker} is unreachable: ${(err as Error).message}; retrying`)
      waitMs = Math.min(RETRY_MS * 2 ** (failures - 1), RETRY_MAX_MS) * (0.5 + Math.random())
      // The event is what the tracker has not heard yet: a node that never got through is still starting.
      if (event === 'started' || event === 'completed') return this.later(tracker, event, waitMs)
    }
    this.later(tracker, undefined, waitMs)
  }

  private later (tracker: string, event: AnnounceEvent, waitMs: number): void {
    clearTimeout(this.timers.get(tracker))
    this.timers.set(tracker, setTimeout(() => void this.announce(tracker, event), waitMs).unref())
  }

  private request (tracker: string, event: AnnounceEvent, timeoutMs: number): Promise<Record<string, unknown>> {
    const { uploaded, downloaded, left } = this.opts.progress()
    const query = `info_hash=${escapeBytes(this.opts.infoHash)}&peer_id=${escapeBytes(this.opts.peerId)}` +
      `&port=${this.opts.port}&uploaded=${uploaded}&downloaded=${downloaded}&left=${left}&compact=1` +
      `&numwant=${event === 'stopped' ? 0 : this.opts.numwant}${event ? `&event=${event}` : ''}`
    return trackerRequest(withProof(`${tracker}${tracker.includes('?') ? '&' : '?'}${query}`, this.opts.secret, 'announce', this.opts.infoHash, this.opts.peerId), timeoutMs)
  }
}

/**
 * Peers that have the description, without registering as one (p2prun's tracker lists only nodes
 * that joined, and a node joins once it has the description); errors if the tracker fails.
 */
export async function peekPeers (tracker: string, opts: { infoHash: Buffer, peerId: Buffer, secret?: JobSecret, numwant: number, timeoutMs: number }): Promise<string[]> {
  const query = `info_hash=${escapeBytes(opts.infoHash)}&peer_id=${escapeBytes(opts.peerId)}&port=1&uploaded=0&downloaded=0&left=1` +
    `&compact=1&numwant=${opts.numwant}&${PEEK_PARAM}=1`
  const reply = await trackerRequest(withProof(`${tracker}${tracker.includes('?') ? '&' : '?'}${query}`, opts.secret, 'announce', opts.infoHash, opts.peerId), opts.timeoutMs)
  if (reply['failure reason'] !== undefined) throw new Error(`tracker ${tracker} refused: ${text(reply['failure reason'])}`)
  return peersOf(reply.peers)
}

/** One GET to a tracker: its bencoded reply. */
function trackerRequest (url: string, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        try {
          const reply = bencode.decode(Buffer.concat(chunks))
          if (typeof reply !== 'object' || reply === null) throw new Error('not a dictionary')
          resolve(reply as Record<string, unknown>)
        } catch (err) {
          reject(new Error(`HTTP ${res.statusCode}, not a tracker reply (${(err as Error).message})`))
        }
      })
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`no reply in ${timeoutMs / 1000} s`)))
    req.on('error', reject)
  })
}

/** Compact peers (6 bytes each: IPv4, port) or the original list of dictionaries. */
function peersOf (raw: unknown): string[] {
  if (raw instanceof Uint8Array) return decodeCompact(raw)
  if (!Array.isArray(raw)) return []
  return raw.flatMap((p: unknown) => {
    const peer = p as { ip?: unknown, port?: unknown }
    return typeof peer.port === 'number' && peer.ip !== undefined ? [`${text(peer.ip)}:${peer.port}`] : []
  })
}

/** Binary query values (info_hash, peer_id) as a tracker reads them: every byte percent-encoded. */
export function escapeBytes (bytes: Uint8Array): string {
  let out = ''
  for (const b of bytes) out += `%${b.toString(16).padStart(2, '0')}`
  return out
}

function text (v: unknown): string {
  return v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : String(v)
}
