// `p2prun serve FILE --source DIR`: the head's bootstrap daemons, a tracker and a seeder.
// `p2prun serve --sets DIR`: a system-wide head, one tracker and a seeder for each set in DIR,
// while sets come and go (lib/set-spool.ts).
import { stat } from 'node:fs/promises'
import path from 'node:path'
import type { Command } from 'commander'
import type { Config } from '../../lib/config.ts'
import { layoutOf } from '../../lib/source-layout.ts'
import { withLaunchInfo } from '../../lib/description.ts'
import { usageError } from '../../lib/errors.ts'
import { secretFromEnv, type JobSecret } from '../../lib/swarm/job-auth.ts'
import { action, addSettings, commandConfig, say, untilSignal } from '../cli-support.ts'
import { checkDiscovery } from '../../lib/session/head.ts'
import { readDescription, writeAtomically } from '../../lib/description-file.ts'

export function registerServe (program: Command): void {
  const cmd = program.command('serve')
    .description('run the job\'s tracker and seeder for a description, or a system-wide head for a directory of sets, until SIGINT/SIGTERM')
    .argument('[file]', 'description file (.p2p.torrent)')
    .option('--source <dir>', 'the directory the description was made from')
    .option('--sets <dir>', 'serve every set in DIR (NAME.p2p.torrent beside NAME, its source directory), as they come and go')
    .option('--out <file>', 'also write the description with this tracker and seeder filled in')
    .option('--open', 'serve any BitTorrent client; without it, only nodes holding P2PRUN_SECRET')
  addSettings(cmd, ['host', 'advertise', 'tracker-port', 'seeder-port', 'discovery', 'dht-port', 'tracker-max-peers',
    'tracker-announce-peers', 'upload-limit', 'defer-to-peers', 'verify-source', 'head-max-conns', 'agent', 'quiet'])
  cmd.action(action('serve', async (file: string | undefined, opts: { source?: string, sets?: string, out?: string, open?: boolean }) => {
    const config = await commandConfig(cmd)
    if (opts.sets !== undefined ? file !== undefined || opts.source !== undefined || opts.out !== undefined : file === undefined || opts.source === undefined) {
      throw usageError('give a description and its source, or --sets alone', 'p2prun serve FILE --source DIR, or p2prun serve --sets DIR')
    }
    const secret = opts.open ? undefined : secretFromEnv(process.env)
    if (!opts.open && !secret) {
      throw usageError('no job secret: a head serves only the nodes that prove P2PRUN_SECRET',
        'export P2PRUN_SECRET=$(openssl rand -hex 32) here and for the nodes, or pass --open to serve any client')
    }
    checkDiscovery(config, false) // a head on its own: its nodes have no node list
    if (opts.sets !== undefined) return serveSets(opts.sets, config, secret)
    const desc = await readDescription(file as string)
    const { startHead } = await import('../../lib/head.ts')
    const signal = untilSignal()
    const head = await startHead(desc, layoutOf([opts.source as string]), config,
      (line) => process.stderr.write(`p2prun serve: warning: ${line}\n`), secret)
    try {
      if (opts.out) {
        const discovery = head.dhtAddress ? { trackers: [], dhtNodes: [head.dhtAddress] } : { trackers: [head.trackerUrl] }
        await writeAtomically(opts.out, withLaunchInfo(desc, { ...discovery, seeders: [head.seederAddress] }).torrent)
      }
      say(config, `p2prun serve: source ${head.verified ? 'hashed and verified' : 'matches the description (sizes, mtimes)'}`)
      process.stdout.write(`serving infohash=${desc.infoHash} tracker=${head.trackerUrl} seeder=${head.seederAddress}${head.dhtAddress ? ` dht=${head.dhtAddress}` : ''}\n`)
      const sig = await signal
      say(config, `p2prun serve: ${sig}, stopping`)
      await head.close() // the native seeder's last counters come with its end
      const up = head.uploaded()
      process.stdout.write(`uploaded=${up} set=${desc.totalBytes} ratio=${(up / desc.totalBytes).toFixed(2)}\n`)
    } finally {
      await head.close()
    }
  }))
}

/** Until SIGINT/SIGTERM: one line per set served or stopped on stdout, one per set refused on stderr. */
async function serveSets (dir: string, config: Config, secret: JobSecret | undefined): Promise<void> {
  const sets = path.resolve(dir)
  if (!(await stat(sets).then((s) => s.isDirectory(), () => false))) throw usageError(`--sets ${sets} is not a directory`, 'create it, then put NAME.p2p.torrent beside NAME there')
  if (config.discovery === 'dht') throw usageError('a system-wide head (--sets) has a tracker only: --discovery dht serves one set', 'leave out --discovery, or serve the set on its own: p2prun serve FILE --source DIR --discovery dht')
  const { startSetHead } = await import('../../lib/head.ts')
  const { serveSpool } = await import('../../lib/set-spool.ts')
  const signal = untilSignal()
  const head = await startSetHead(config, (line) => process.stderr.write(`p2prun serve: warning: ${line}\n`), secret)
  const stop = new AbortController()
  try {
    process.stdout.write(`serving sets from ${sets} tracker=${head.trackerUrl}\n`)
    await serveSpool(sets, head, {
      serving: (name, infoHash, seeder) => process.stdout.write(`serving ${name} infohash=${infoHash} seeder=${seeder}\n`),
      stopped: (name, infoHash) => process.stdout.write(`stopped ${name} infohash=${infoHash}\n`),
      refused: (name, reason) => process.stderr.write(`p2prun serve: warning: ${name}: ${reason}\n`)
    }, stop.signal)
    say(config, `p2prun serve: ${await signal}, stopping`)
  } finally {
    stop.abort()
    await head.close()
  }
}
