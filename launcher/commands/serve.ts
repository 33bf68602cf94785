// `p2prun serve FILE --source DIR`: the head's bootstrap daemons, a tracker and a seeder.
import type { Command } from 'commander'
import { layoutOf } from '../../lib/source-layout.ts'
import { withLaunchInfo } from '../../lib/description.ts'
import { usageError } from '../../lib/errors.ts'
import { secretFromEnv } from '../../lib/swarm/job-auth.ts'
import { action, addSettings, commandConfig, say, untilSignal } from '../cli-support.ts'
import { readDescription, writeAtomically } from '../../lib/description-file.ts'

export function registerServe (program: Command): void {
  const cmd = program.command('serve')
    .description('run the job\'s tracker and seeder for a description until SIGINT/SIGTERM')
    .argument('<file>', 'description file (.p2p.torrent)')
    .requiredOption('--source <dir>', 'the directory the description was made from')
    .option('--out <file>', 'also write the description with this tracker and seeder filled in')
    .option('--open', 'serve any BitTorrent client; without it, only nodes holding P2PRUN_SECRET')
  addSettings(cmd, ['host', 'advertise', 'tracker-port', 'seeder-port', 'tracker-max-peers',
    'tracker-announce-peers', 'upload-limit', 'defer-to-peers', 'verify-source', 'head-max-conns', 'quiet'])
  cmd.action(action('serve', async (file: string, opts: { source: string, out?: string, open?: boolean }) => {
    const config = await commandConfig(cmd)
    const secret = opts.open ? undefined : secretFromEnv(process.env)
    if (!opts.open && !secret) {
      throw usageError('no job secret: a head serves only the nodes that prove P2PRUN_SECRET',
        'export P2PRUN_SECRET=$(openssl rand -hex 32) here and for the nodes, or pass --open to serve any client')
    }
    const desc = await readDescription(file)
    const { startHead } = await import('../../lib/head.ts')
    const signal = untilSignal()
    const head = await startHead(desc, layoutOf([opts.source]), config,
      (line) => process.stderr.write(`p2prun serve: warning: ${line}\n`), secret)
    try {
      if (opts.out) {
        await writeAtomically(opts.out, withLaunchInfo(desc, { trackers: [head.trackerUrl], seeders: [head.seederAddress] }).torrent)
      }
      say(config, `p2prun serve: source ${head.verified ? 'hashed and verified' : 'matches the description (sizes, mtimes)'}`)
      process.stdout.write(`serving infohash=${desc.infoHash} tracker=${head.trackerUrl} seeder=${head.seederAddress}\n`)
      const sig = await signal
      say(config, `p2prun serve: ${sig}, stopping`)
      const up = head.uploaded()
      process.stdout.write(`uploaded=${up} set=${desc.totalBytes} ratio=${(up / desc.totalBytes).toFixed(2)}\n`)
    } finally {
      await head.close()
    }
  }))
}
