// The head's seeder in C (native/agent/seed.c, `p2prun-agent seed`), for this head process: the
// same rules as seeder.ts's, at a fraction of its CPU (it sends from the source's page cache, and
// no JavaScript runs per message). The description goes on its standard input, the secret in its
// environment; it says `ok {"port":N}` or its failure on fd 3, prints its counters on stdout as
// they change, and reads on fd 4 whether the head hands the description to anyone ('1') or to a
// few ('0'): `noOtherHolder` is the tracker's knowledge, which lives here.
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import type { Writable } from 'node:stream'
import { peerShareable, type Description } from '../description.ts'
import { builtDistFile, distFile, NATIVE_AGENT_FILE } from '../dist-files.ts'
import { P2prunError } from '../errors.ts'
import { readyLine, stopChild } from '../session/process.ts'
import type { SourceLayout } from '../source-layout.ts'
import { envWithSecret } from './job-auth.ts'
import type { HoldersSeen, Seeder, SeederOptions } from './seeder.ts'
import { sourceMatches } from './source-files.ts'

/** What `seed` takes at most (native/agent/agent.h MAX_HEAD_CONNS, description.h MAX_ADDRESSES). */
const MAX_HEAD_CONNS = 1000
const MAX_ADDRESSES = 16
/** How often whether another node holds the description is asked again. */
const HOLDERS_MS = 250
const STOP_WAIT_MS = 5000

interface Counters extends HoldersSeen {
  readonly uploaded: number
  readonly maxToOnePeer: number
  readonly descriptionBytes: number
  /** The line answers a SIGUSR1 (refresh). */
  readonly asked?: boolean
}

/** What of `opts` the native seeder does not do, as "it does not do …" ends; undefined: it serves them all. */
export function nativeSeederRefusal (opts: SeederOptions, layout: SourceLayout): string | undefined {
  if (opts.uploadLimit > 0) return 'an upload limit'
  if (opts.maxConns > MAX_HEAD_CONNS) return `more than ${MAX_HEAD_CONNS} connections`
  if (opts.host.includes(':')) return 'IPv6'
  if (opts.trackers.length > MAX_ADDRESSES || layout.dirs.length > MAX_ADDRESSES) return `more than ${MAX_ADDRESSES} trackers or source directories`
  if (!builtDistFile(NATIVE_AGENT_FILE)) return `anything here: ${distFile(NATIVE_AGENT_FILE)} is not built`
  return undefined
}

/** p2prun-agent seed for `desc` from `layout`, listening once this returns; `warn` hears its stderr. */
export async function startNativeSeeder (desc: Description, layout: SourceLayout, opts: SeederOptions, warn: (line: string) => void): Promise<Seeder> {
  const verify = opts.verify || !(await sourceMatches(desc, layout))
  const program = builtDistFile(NATIVE_AGENT_FILE)
  if (!program) throw new P2prunError('LAUNCH', `${distFile(NATIVE_AGENT_FILE)} is missing`, { hint: 'rebuild p2prun (npm ci), or set agent to node' })
  const child = spawn(program, [
    'seed', '-', '--notify-fd', '3', '--control-fd', '4', '--die-with-parent', '--host', opts.host, '--port', String(opts.port),
    '--max-conns', String(opts.maxConns), '--defer-ms', String(opts.deferToPeersMs), ...(verify ? ['--verify'] : []),
    ...opts.trackers.flatMap((url) => ['--tracker', url]),
    ...layout.dirs.flatMap(({ name, dir }) => ['--source', name === '' ? dir : `${name}=${dir}`])
  ], { env: envWithSecret(opts.secret), stdio: ['pipe', 'pipe', 'pipe', 'pipe', 'pipe'] })
  child.on('error', () => {}) // it cannot start: fd 3 closes, and readyLine says so
  child.stdin?.on('error', () => {})
  child.stdin?.end(peerShareable(desc))
  const seeder = new NativeSeeder(child, verify, opts, warn)
  try {
    seeder.listening(await readyLine(child, () => new P2prunError('SWARM', 'the native seeder ended before it listened', { hint: 'set agent to node to run the Node seeder instead' })))
  } catch (err) {
    await seeder.close()
    throw err
  }
  return seeder
}

class NativeSeeder implements Seeder {
  port = 0
  readonly verified: boolean
  private counters: Counters = { uploaded: 0, maxToOnePeer: 0, descriptionBytes: 0, joined: 0, connected: 0 }
  private readonly child: ChildProcess
  private readonly control: Writable
  private readonly exited: Promise<void>
  private readonly holders: NodeJS.Timeout | undefined
  private readonly asking: (() => void)[] = []
  private toAnyone = false
  private closing: Promise<void> | undefined

  constructor (child: ChildProcess, verified: boolean, opts: SeederOptions, warn: (line: string) => void) {
    this.child = child
    this.verified = verified
    this.control = child.stdio[4] as Writable
    this.control.on('error', () => {})
    this.exited = new Promise((resolve) => {
      if (child.pid === undefined) resolve()
      child.on('close', () => {
        for (const answer of this.asking.splice(0)) answer()
        resolve()
      })
    })
    createInterface({ input: child.stderr! }).on('line', (line) => warn(line.replace(/^p2prun-agent: /, '')))
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        this.counters = JSON.parse(line) as Counters
      } catch {
        return
      }
      if (this.counters.asked) for (const answer of this.asking.splice(0)) answer()
    })
    const noOtherHolder = opts.noOtherHolder
    if (noOtherHolder) {
      this.holders = setInterval(() => {
        const anyone = noOtherHolder(this.counters)
        if (anyone !== this.toAnyone) this.control.write(anyone ? '1' : '0')
        this.toAnyone = anyone
      }, HOLDERS_MS)
      this.holders.unref()
    }
  }

  /** Its `ok` line's value: {"port":N}. */
  listening (said: string): void {
    this.port = (JSON.parse(said) as { port: number }).port
  }

  uploaded (): number {
    return this.counters.uploaded
  }

  maxToOnePeer (): number {
    return this.counters.maxToOnePeer
  }

  descriptionBytes (): number {
    return this.counters.descriptionBytes
  }

  /** Its counters printed whenever they changed, at most once a tick: asked for now (SIGUSR1). */
  refresh (): Promise<void> {
    if (this.child.pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve()
    return new Promise((resolve) => {
      this.asking.push(resolve)
      this.child.kill('SIGUSR1')
    })
  }

  /** It tells the trackers it leaves and prints its last counters on SIGTERM; one that does not end in time is killed. */
  close (): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.holders)
      await stopChild(this.child, this.exited, STOP_WAIT_MS)
    })()
    return this.closing
  }
}
