// `p2prun mount FILE [MOUNTPOINT]` runs a node agent (swarm + FUSE mount) in the foreground, or with
// --daemon detaches once the mount is ready. `p2prun umount MOUNTPOINT` stops it, or removes the
// mount of an agent that died.
import { spawn } from 'node:child_process'
import { mkdir, open, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Option, type Command } from 'commander'
import { layoutOf } from '../../lib/source-layout.ts'
import { agentOptions, nodeOptions } from '../../lib/agent-settings.ts'
import { expandTemplate } from '../../lib/session/job-spec.ts'
import { mountLogPath, readMountRecord, removeMountRecord, writeMountRecord } from '../../lib/session/node-state.ts'
import { readyLine, terminate } from '../../lib/session/process.ts'
import type { AgentOptions, RunningAgent } from '../../lib/agent.ts'
import type { Config } from '../../lib/config.ts'
import { failureLine, P2prunError, usageError } from '../../lib/errors.ts'
import { secretFromEnv } from '../../lib/swarm/job-auth.ts'
import { readNodeList, type NodeList } from '../../lib/swarm/node-list.ts'
import { action, addSettings, collect, commandConfig, notifyFd, say, untilSignal } from '../cli-support.ts'
import { readDescription, writeAtomically } from '../../lib/description-file.ts'

interface MountFlags {
  daemon?: boolean
  readyFile?: string
  stats?: string
  keepStore?: boolean
  tracker?: string[]
  dht?: string[]
  seeder?: string[]
  nodeList?: string
  nodeIndex?: string
  source?: string
  notifyFd?: string
}

export function registerMount (program: Command): void {
  const cmd = program.command('mount')
    .description('mount a description as a read-only file system backed by the swarm')
    .argument('<file>', 'description file (.p2p.torrent)')
    .argument('[mountpoint]', 'where to mount (default: the description\'s mount point)')
    .option('--daemon', 'detach once the mount is ready')
    .option('--ready-file <file>', 'write {"pid","mountPoint"} here once the mount is ready')
    .option('--stats <file>', 'write the operation and byte counters as one JSON line at exit')
    .option('--keep-store', 'leave the downloaded bytes in the store directory at exit')
    .option('--tracker <url>', 'tracker to announce to, instead of the description\'s (repeatable)', collect)
    .option('--dht <host:port>', 'find peers in the DHT bootstrapped from this node (`p2prun serve --discovery dht` prints it), not at a tracker (repeatable)', collect)
    .option('--seeder <host:port>', 'peer to connect to directly, e.g. the head\'s seeder (repeatable)', collect)
    .option('--node-list <file>', 'find peers in the job\'s node list, not at a tracker: host:port where each node\'s agent listens, one per line, the same file on every node')
    .option('--node-index <k>', 'with --node-list, this node\'s line in it, from 0: the agent listens there')
    .option('--source <dir>', 'the directory the set was described from, if this node can read it: the fallback when the swarm stalls')
    .addOption(new Option('--notify-fd <fd>').hideHelp())
  addSettings(cmd, ['agent', 'mode', 'store-dir', 'owner', 'allow-other', 'node-name', 'run-dir', 'fuse-device', 'max-conns', 'numwant', 'stall-timeout', 'fallback', 'quiet'])
  cmd.action(action('mount', async (file: string, mountArg: string | undefined, opts: MountFlags) => {
    const config = await commandConfig(cmd)
    const desc = await readDescription(file)
    const nodeList = await nodeListFlags(opts) // read before a daemon detaches: its errors are the user's
    const mountPoint = path.resolve(mountArg ?? expandTemplate(desc.mountPoint, { infoHash: desc.infoHash, nodeName: config.nodeName }))
    const options = agentOptions(config, desc, mountPoint, {
      mode: config.mode,
      node: nodeOptions(config, { trackers: opts.tracker, seeders: opts.seeder, dht: opts.dht, nodeList, secret: secretFromEnv(process.env), sources: opts.source ? layoutOf([opts.source]).dirs : undefined }),
      keepStore: opts.keepStore ?? false,
      log: (line: string) => process.stderr.write(`p2prun mount: ${line}\n`)
    })
    const { agentKind } = await import('../../lib/agent-choice.ts')
    const kind = agentKind(options, config.agent)
    if (opts.daemon) return daemonize(config, options, kind, opts)
    await runAgent(config, options, kind, opts)
  }))

  const umount = program.command('umount')
    .description('stop the agent serving a mount, or remove a mount whose agent died')
    .argument('<mountpoint>')
  addSettings(umount, ['run-dir', 'node-name'])
  umount.action(action('umount', async (mountArg: string) => {
    await unmountAgent(await commandConfig(umount), path.resolve(mountArg))
  }))
}

/** --node-list and --node-index, read and checked; undefined without them. */
async function nodeListFlags (opts: MountFlags): Promise<NodeList | undefined> {
  if (opts.nodeList === undefined) {
    if (opts.nodeIndex !== undefined) throw usageError('--node-index is a place in --node-list', 'pass --node-list FILE too, or leave out --node-index')
    return undefined
  }
  if (opts.tracker || opts.dht) throw usageError('--node-list replaces the tracker and the DHT', 'leave out --tracker and --dht, or --node-list')
  if (opts.nodeIndex === undefined) throw usageError('--node-list needs --node-index, this node\'s line in it, from 0', 'pass --node-index K')
  if (!/^\d+$/.test(opts.nodeIndex)) throw usageError(`--node-index ${JSON.stringify(opts.nodeIndex)} is not a line of --node-list`, 'pass a number from 0')
  return readNodeList(opts.nodeList, Number(opts.nodeIndex))
}

async function runAgent (config: Config, options: AgentOptions, kind: RunningAgent['kind'], opts: MountFlags): Promise<void> {
  const { startAgent } = await import('../../lib/agent-choice.ts')
  const signal = untilSignal()
  const { log, description: desc, mountPoint } = options
  let agent: RunningAgent
  try {
    agent = await startAgent(options, kind)
  } catch (err) {
    // --daemon's parent waits on the pipe: the reason goes there, as data, and it reports it.
    if (opts.notifyFd) await notifyFd(Number(opts.notifyFd), `error ${failureLine(err)}`)
    throw err
  }
  // Before anyone learns the mount is up: a SIGUSR1 with no handler yet would start Node's
  // inspector instead (seen: a test asking for stats right after "mounted" waited forever).
  const onUsr1 = () => void agent.stats().then((stats) => log(`stats ${JSON.stringify(stats)}`))
  process.on('SIGUSR1', onUsr1)
  try {
    await writeMountRecord(config.runDir, { node: config.nodeName, pid: process.pid, mountPoint, storePath: agent.storePath, infoHash: desc.infoHash })
    if (opts.readyFile) await writeAtomically(opts.readyFile, Buffer.from(JSON.stringify({ pid: process.pid, mountPoint })))
    process.stdout.write(`mounted infohash=${desc.infoHash} mode=${config.mode} at=${mountPoint}\n`)
    if (opts.notifyFd) await notifyFd(Number(opts.notifyFd), 'ok')
    const sig = await signal
    process.off('SIGUSR1', onUsr1)
    say(config, `p2prun mount: ${sig}, unmounting ${mountPoint}`)
  } finally {
    await agent.stop()
    const stats = await agent.stats()
    await removeMountRecord(config.runDir, config.nodeName, mountPoint)
    // A daemon's log is its stdout/stderr: kept after a failure, not after a clean stop.
    if (opts.notifyFd) await rm(mountLogPath(config.runDir, config.nodeName, mountPoint), { force: true })
    if (opts.readyFile) await rm(opts.readyFile, { force: true })
    if (opts.stats) await writeFile(opts.stats, `${JSON.stringify(stats)}\n`)
  }
}

/**
 * Detach the agent and return once its mount is up. The native agent is started detached itself
 * (no Node process stays: it writes --ready-file and --stats, this writes the mount record); the
 * Node one is this same command run again without --daemon, saying on a pipe that it is ready, or
 * why it failed (readyLine); if it dies first, its log may say why.
 */
async function daemonize (config: Config, options: AgentOptions, kind: RunningAgent['kind'], opts: MountFlags): Promise<void> {
  await mkdir(config.runDir, { recursive: true, mode: 0o700 })
  const { mountPoint } = options
  const logFile = mountLogPath(config.runDir, config.nodeName, mountPoint)
  const logHandle = await open(logFile, 'w')
  let pid: number
  try {
    if (kind === 'native') {
      pid = await (await import('../../lib/native-agent.ts')).detachNative(options, logHandle.fd, { readyFile: opts.readyFile, stats: opts.stats })
      await writeMountRecord(config.runDir, { node: config.nodeName, pid, mountPoint, infoHash: options.description.infoHash, native: true })
    } else {
      const args = process.argv.slice(1).filter((a) => a !== '--daemon')
      const child = spawn(process.execPath, [...args, '--notify-fd', '3'], { detached: true, stdio: ['ignore', logHandle.fd, logHandle.fd, 'pipe'] })
      await readyLine(child, () => new P2prunError('FUSE', `the mount agent exited before it was ready (log: ${logFile})`))
      child.unref()
      pid = child.pid as number
    }
  } finally {
    await logHandle.close()
  }
  say(config, `p2prun mount: agent ${pid} serves ${mountPoint} (log: ${logFile})`)
}

const EXIT_WAIT_MS = 15_000

async function unmountAgent (config: Config, mountPoint: string): Promise<void> {
  const { isMounted, lazyUnmount } = await import('../../lib/mount.ts')
  const state = await readMountRecord(config.runDir, config.nodeName, mountPoint)
  const mounted = await isMounted(mountPoint)
  if (!state && !mounted) throw usageError(`nothing is mounted at ${mountPoint}`, 'check the path with `grep fuse /proc/mounts`')
  // The agent unmounts and exits on SIGTERM; a dead or stuck one is unmounted lazily below.
  const exited = state ? await terminate(state.pid, EXIT_WAIT_MS) : false
  if (await isMounted(mountPoint)) await lazyUnmount(mountPoint)
  if (state?.storePath && exited) await rm(state.storePath, { recursive: true, force: true })
  // A native daemon's log, after it stopped (a Node daemon removes its own after a clean stop).
  if (state?.native && exited) await rm(mountLogPath(config.runDir, config.nodeName, mountPoint), { force: true })
  await removeMountRecord(config.runDir, config.nodeName, mountPoint)
}

