// What every subcommand shares: settings flags generated from the config table, config loading,
// quiet-aware output, and turning errors into one line and an exit code.
import { close, write } from 'node:fs'
import type { Command } from 'commander'
import { loadConfig, SETTINGS, type Config, type SettingName } from '../lib/config.ts'
import { debugLevel } from '../lib/debug.ts'
import { AlreadyReported, formatError, P2prunError } from '../lib/errors.ts'

/** commander option parser for repeatable options. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

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
  if (debugLevel(process.env) >= 1 && err instanceof Error) process.stderr.write(`${err.stack}\n`)
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

/** A word as a POSIX shell reads it back: bare when it is safe so, else single-quoted. */
export function shellQuote (word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`
}
