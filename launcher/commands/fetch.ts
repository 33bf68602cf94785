// `p2prun fetch FILE --out DIR`: download the whole set through the swarm (tests, benches, and the
// same path eager mode takes) and report where the bytes came from.
import { mkdir, readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import type { Command } from 'commander'
import { formatBytes } from '../../lib/description.ts'
import { usageError } from '../../lib/errors.ts'
import { extractTree } from '../../lib/extract.ts'
import { secretFromEnv } from '../../lib/swarm/job-auth.ts'
import { nodeOptions } from '../../lib/agent-settings.ts'
import { action, addSettings, collect, commandConfig, say, untilSignal } from '../cli-support.ts'
import { readDescription } from '../../lib/description-file.ts'
import type { SwarmNode as Node } from '../../lib/swarm/node.ts'

export function registerFetch (program: Command): void {
  const cmd = program.command('fetch')
    .description('download the whole library set through the swarm into a directory')
    .argument('<file>', 'description file (.p2p.torrent)')
    .requiredOption('--out <dir>', 'new or empty directory to write the tree into')
    .option('--tracker <url>', 'tracker to announce to, instead of the description\'s (repeatable)', collect)
    .option('--dht <host:port>', 'find peers in the DHT bootstrapped from this node (`p2prun serve --discovery dht` prints it), not at a tracker (repeatable)', collect)
    .option('--seeder <host:port>', 'peer to connect to directly, e.g. the head\'s seeder (repeatable)', collect)
    .option('--json', 'print the byte counters as one JSON line')
  addSettings(cmd, ['store-dir', 'max-conns', 'numwant', 'stall-timeout', 'quiet'])
  cmd.action(action('fetch', async (file: string, opts: { out: string, tracker?: string[], seeder?: string[], dht?: string[], json?: boolean }) => {
    const config = await commandConfig(cmd)
    const desc = await readDescription(file)
    const out = path.resolve(opts.out)
    const created = await prepareOutDir(out)
    const { SwarmNode } = await import('../../lib/swarm/node.ts')
    const started = performance.now()
    const aborter = new AbortController()
    untilSignal().then((sig) => aborter.abort(usageError(`interrupted by ${sig}`)))
    let node: Node | undefined
    try {
      node = await SwarmNode.join(desc, nodeOptions(config, { trackers: opts.tracker, seeders: opts.seeder, dht: opts.dht, secret: secretFromEnv(process.env) }),
        (line) => process.stderr.write(`p2prun fetch: warning: ${line}\n`))
      await node.fetchAll(aborter.signal)
      await extractTree(desc, node, out)
      const s = node.stats()
      const seconds = (performance.now() - started) / 1000
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ bytes: desc.totalBytes, fromHead: s.fromHead, fromPeers: s.fromPeers, uploaded: s.uploaded, seconds })}\n`)
      }
      say(config, `p2prun fetch: ${formatBytes(desc.totalBytes)} in ${seconds.toFixed(2)} s: ` +
        `${formatBytes(s.fromHead)} from the head, ${formatBytes(s.fromPeers)} from peers, ${formatBytes(s.uploaded)} uploaded`)
    } catch (err) {
      if (created) await rm(out, { recursive: true, force: true })
      throw err
    } finally {
      await node?.close()
    }
  }))
}

/** Returns whether the directory was created here (and so must be removed on failure). */
async function prepareOutDir (out: string): Promise<boolean> {
  const existing = await readdir(out).catch(() => undefined)
  if (existing && existing.length > 0) throw usageError(`output directory ${out} is not empty`, 'pass a new or empty directory to --out')
  if (existing) return false
  await mkdir(out, { recursive: true })
  return true
}
