// The head's tracker under a large job's announces: registers --peers distinct peers (as many nodes
// starting), then has each announce again, and reports the head process's CPU per announce and the
// announce latency. The head is a real `p2prun serve` (tracker and seeder in one process, as in a
// launch) on loopback, with the job's secret; the clients are this process, --concurrency at a time.
// Usage: node bench/tracker-load.ts [--peers 16000] [--concurrency 64] [--numwant 100] [--p2prun PATH]
//   --p2prun: another build's bin/p2prun, for an A/B (an older head ignores the secret).
import { readFile } from 'node:fs/promises'
import http from 'node:http'
import { parseArgs } from 'node:util'
import { parseDescription } from '../lib/description.ts'
import { escapeBytes } from '../lib/swarm/announce.ts'
import { withProof, type JobSecret } from '../lib/swarm/job-auth.ts'
import { inPool, lineOf, P2PRUN, processCpuSeconds, withLoadHead } from './workload.ts'

const { values: opts } = parseArgs({
  options: {
    peers: { type: 'string', default: '16000' },
    concurrency: { type: 'string', default: '64' },
    numwant: { type: 'string', default: '100' },
    p2prun: { type: 'string', default: P2PRUN }
  }
})
const PEERS = Number(opts.peers)
const CONCURRENCY = Number(opts.concurrency)

/** One announce over a kept-alive connection; resolves with its latency in ms. */
function announce (agent: http.Agent, url: string): Promise<number> {
  const start = performance.now()
  return new Promise((resolve, reject) => {
    http.get(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => (res.statusCode === 200 ? resolve(performance.now() - start) : reject(new Error(`HTTP ${res.statusCode}`))))
    }).on('error', reject)
  })
}

/** Every url announced, CONCURRENCY at a time: their latencies, sorted. */
async function wave (agent: http.Agent, urls: readonly string[]): Promise<number[]> {
  const latencies: number[] = []
  await inPool(urls.length, CONCURRENCY, async (i) => { latencies.push(await announce(agent, urls[i] as string)) })
  return latencies.sort((a, b) => a - b)
}

const quantile = (xs: readonly number[], q: number) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))] ?? 0

await withLoadHead('p2prun-tracker-load-', opts.p2prun, ['--tracker-max-peers', String(PEERS + 1000), '--tracker-announce-peers', opts.numwant],
  async ({ child, description, secretHex }) => {
    const secret = Buffer.from(secretHex, 'hex') as JobSecret
    const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY })
    try {
      const m = await lineOf(child, /tracker=(\S+)/)
      const desc = parseDescription(await readFile(description))
      const infoHash = Buffer.from(desc.infoHash, 'hex')
      const peerIds = Array.from({ length: PEERS }, (_, i) => Buffer.from(`-P2N020-${i.toString(16).padStart(12, '0')}`))
      const url = (peerId: Buffer, i: number, event: string) => withProof(`${m[1]}?info_hash=${escapeBytes(infoHash)}&peer_id=${escapeBytes(peerId)}` +
        `&port=${10_000 + (i % 50_000)}&uploaded=0&downloaded=0&left=1048576&compact=1&numwant=${opts.numwant}${event}`,
      secret, 'announce', infoHash, peerId)
      const pid = child.pid as number
      const cpu0 = await processCpuSeconds(pid)
      const started = await wave(agent, peerIds.map((id, i) => url(id, i, '&event=started')))
      const cpu1 = await processCpuSeconds(pid)
      const again = await wave(agent, peerIds.map((id, i) => url(id, i, '')))
      const cpu2 = await processCpuSeconds(pid)
      const row = (name: string, lat: number[], cpu: number) => console.log(`${name.padEnd(34)} ${(cpu * 1000 / lat.length).toFixed(3).padStart(8)} ms` +
        `  p50 ${quantile(lat, 0.5).toFixed(1).padStart(6)} ms  p99 ${quantile(lat, 0.99).toFixed(1).padStart(6)} ms`)
      console.log(`head ${opts.p2prun}; ${PEERS} peers, ${CONCURRENCY} at a time, numwant ${opts.numwant}, loopback`)
      console.log('phase                              head CPU per announce   latency')
      row(`register 0 → ${PEERS} peers`, started, cpu1 - cpu0)
      row(`announce again at ${PEERS} peers`, again, cpu2 - cpu1)
    } finally {
      agent.destroy()
    }
  })
