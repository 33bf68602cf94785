// What every subcommand shares: settings flags generated from the config table, config loading,
// quiet-aware output, and turning errors into one line and an exit code.
import { close, write } from 'node:fs'
import os from 'node:os'
import type { Command } from 'commander'
import type { AgentOptions } from '../lib/agent.ts'
import { loadConfig, SETTINGS, type Config, type SettingName } from '../lib/config.ts'
import type { SourceLayout } from '../lib/source-layout.ts'
import type { Description } from '../lib/description.ts'
import { AlreadyReported, formatError, P2prunError } from '../lib/errors.ts'
import type { JobSecret } from '../lib/swarm/job-auth.ts'

/** commander option parser for repeatable options. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** Where a node's swarm client gets its peers, the job's secret, and its settings. */
export function nodeOptions (config: Config,
  peers: { trackers?: readonly string[], seeders?: readonly string[], secret?: JobSecret, sources?: SourceLayout['dirs'] }): AgentOptions['node'] {
  return {
    secret: peers.secret,
    fallback: config.fallback === 'auto' && peers.sources?.length ? { dirs: peers.sources } : undefined,
    storeDir: config.storeDir,
    port: 0,
    maxConns: config.maxConns,
    numwant: config.numwant,
    stallTimeoutMs: config.stallTimeoutMs,
    trackers: peers.trackers,
    seeders: peers.seeders
  }
}

/** A node agent from the settings; files are owned by --owner, else by this process's user. */
export function agentOptions (config: Config, description: Description, mountPoint: string,
  rest: Pick<AgentOptions, 'mode' | 'node' | 'keepStore' | 'log'>): AgentOptions {
  return {
    ...rest,
    description,
    mountPoint,
    allowOther: config.allowOther,
    fuseDevice: config.fuseDevice,
    uid: config.owner?.uid ?? process.getuid?.() ?? 0,
    gid: config.owner?.gid ?? process.getgid?.() ?? 0
  }
}

/** Adds --name flags for the given settings; their defaults live in config.ts, not in commander. */
export function addSettings (cmd: Command, names: readonly SettingName[]): Command {
  for (const name of names) {
    const spec = SETTINGS[name]
    cmd.option(spec.kind === 'bool' ? `--${name}` : `--${name} <value>`, spec.help)
  }
  return cmd
}

/** The command's config: its flags over P2PRUN_* over the YAML file over defaults. */
export async function commandConfig (cmd: Command): Promise<Config> {
  const flags: Partial<Record<SettingName, string | boolean>> = {}
  const all = cmd.optsWithGlobals()
  for (const name of Object.keys(SETTINGS) as SettingName[]) {
    const key = name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
    if (all[key] !== undefined) flags[name] = all[key] as string | boolean
  }
  return loadConfig({ flags, env: process.env, cwd: process.cwd(), configFile: all.config as string | undefined })
}

/** The address other hosts reach this one at: the bind address, or the first non-loopback IPv4. */
export function advertisedHost (config: Config): string {
  if (config.advertise) return config.advertise
  if (config.host !== undefined && config.host !== '0.0.0.0' && config.host !== '::') return config.host
  for (const addrs of Object.values(os.networkInterfaces())) {
    const v4 = addrs?.find((a) => a.family === 'IPv4' && !a.internal)
    if (v4) return v4.address
  }
  return '127.0.0.1'
}

export function say (config: Config, line: string): void {
  if (!config.quiet) process.stderr.write(`${line}\n`)
}

/** Runs an action; a failure is reported by `reportError`. */
export function action<A extends unknown[]> (name: string, fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args)
    } catch (err) {
      reportError(`p2prun ${name}`, err)
    }
  }
}

/** A failure becomes one line, "WHO: error: message (hint: …)", and exit code 1 (2 for usage). */
export function reportError (who: string, err: unknown): void {
  if (err instanceof AlreadyReported) {
    process.exitCode = 1
    return
  }
  process.stderr.write(`${who}: error: ${formatError(err)}\n`)
  if (process.env.P2PRUN_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`)
  process.exitCode = err instanceof P2prunError && err.code === 'USAGE' ? 2 : 1
}

const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP']

/** Resolves on the first SIGINT, SIGTERM or SIGHUP; the process then shuts down in order instead of dying. */
export function untilSignal (): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      for (const s of STOP_SIGNALS) process.off(s, on)
      resolve(sig)
    }
    for (const s of STOP_SIGNALS) process.on(s, on)
  })
}

/** Tell a parent waiting on a pipe (--daemon, a detached head) one line, then close it. */
export function notifyFd (fd: number, line: string): Promise<void> {
  return new Promise((resolve) => write(fd, `${line}\n`, () => close(fd, () => resolve())))
}
