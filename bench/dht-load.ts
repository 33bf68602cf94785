// The head's DHT node (`p2prun serve --discovery dht`) under a large job's queries: --nodes distinct
// nodes each announce under the infohash (announce_peer, with a token from get_peers), then each
// looks it up (get_peers); reports the head process's CPU per query, the cost a node nearest the
// infohash pays for every node of the job (bench/model's dhtQueryCpu). Loopback, one UDP socket in
// this process, --concurrency queries in flight; a query unanswered in 1 s is sent again (twice).
// Usage: node bench/dht-load.ts [--nodes 16000] [--concurrency 50] [--p2prun PATH]
import dgram from 'node:dgram'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { krpcClient, type KrpcReply } from '../test/helpers/krpc.ts'
import { inPool, lineOf, P2PRUN, processCpuSeconds, withLoadHead } from './workload.ts'

const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string', default: '16000' },
    concurrency: { type: 'string', default: '50' },
    p2prun: { type: 'string', default: P2PRUN }
  }
})
const NODES = Number(opts.nodes)
const CONCURRENCY = Number(opts.concurrency)

/** Runs `query(i)` for every node, CONCURRENCY at a time; returns how many went unanswered. */
async function wave (query: (i: number) => Promise<KrpcReply | undefined>): Promise<number> {
  let lost = 0
  await inPool(NODES, CONCURRENCY, async (i) => { if (!(await query(i))) lost++ })
  return lost
}

await withLoadHead('p2prun-dht-load-', opts.p2prun, ['--discovery', 'dht'], async ({ child }) => {
  const socket = dgram.createSocket('udp4')
  try {
    const m = await lineOf(child, /infohash=(\S+) .*dht=\S+:(\d+)/)
    const infoHash = Buffer.from(m[1] as string, 'hex')
    const ask = krpcClient(socket, Number(m[2]), { timeoutMs: 1000, attempts: 3 })
    const token = (await ask('get_peers', { info_hash: infoHash }))?.r?.token
    if (!token) throw new Error('the head\'s DHT node gave no token')
    const ids = Array.from({ length: NODES }, () => randomBytes(20))
    const pid = child.pid as number
    const cpu0 = await processCpuSeconds(pid)
    const lostAnnounces = await wave((i) => ask('announce_peer', { id: ids[i], info_hash: infoHash, port: 10_000 + (i % 50_000), token }))
    const cpu1 = await processCpuSeconds(pid)
    let values = 0
    const lostLookups = await wave(async (i) => {
      const reply = await ask('get_peers', { id: ids[i], info_hash: infoHash })
      values += reply?.r?.values?.length ?? 0
      return reply
    })
    const cpu2 = await processCpuSeconds(pid)
    const answered = NODES - lostLookups
    console.log(`head ${opts.p2prun}; ${NODES} nodes, ${CONCURRENCY} queries in flight, loopback`)
    console.log(`announce_peer  ${((cpu1 - cpu0) * 1000 / NODES).toFixed(3)} ms of head CPU per query  (${lostAnnounces} unanswered after 3 tries)`)
    console.log(`get_peers      ${((cpu2 - cpu1) * 1000 / NODES).toFixed(3)} ms of head CPU per query  (${lostLookups} unanswered; ${answered ? (values / answered).toFixed(0) : 0} peers per answer)`)
  } finally {
    socket.close()
  }
})
