// `p2prun [p2prun options] [launcher options] [--] PROGRAM [ARGS…]`: separates p2prun's own
// options, the launcher's (passed on unchanged) and the program. Launcher options that take a value
// come from the chosen adapter's table; `--opt=value` is always one word; after `--`, p2prun
// recognises none of its own options.
import { AUTO_LIBS, type SettingName } from '../lib/config.ts'
import { quote, usageError } from '../lib/errors.ts'

/** Settings a launch takes as options of its own: config.ts parses and checks them with the rest. */
const SETTING_VALUES: readonly SettingName[] = ['launcher', 'agent', 'mode', 'libs-policy', 'discovery', 'node-host', 'node-port']
const SETTING_FLAGS: readonly SettingName[] = ['follow-symlinks', 'quiet']

export interface RunOptions {
  /** As given (repeatable); config.ts resolves them. */
  readonly libs: readonly string[]
  readonly seeder?: string
  readonly config?: string
  readonly mountPoint?: string
  readonly dryRun: boolean
  readonly stats: boolean
  /** The settings given as options, by name, for loadConfig's flags. */
  readonly settings: Partial<Record<SettingName, string | boolean>>
}

export interface RunArgs {
  readonly options: RunOptions
  readonly launcherArgs: readonly string[]
  readonly program: readonly string[]
}

const OWN_VALUES = new Set(['--libs', '--seeder', '--config', '--mount-point', ...SETTING_VALUES.map((n) => `--${n}`)])
const OWN_FLAGS = new Set(['--dry-run', '--stats', ...SETTING_FLAGS.map((n) => `--${n}`)])
/**
 * The rank count, which every launcher takes as `-n` (and Open MPI, MPICH and p2prun's own as
 * `-np`): checked here, so a typo fails before anything is described or started.
 */
const RANK_COUNT_OPTIONS = new Set(['-n', '-np'])

export function splitRunArgs (argv: readonly string[], launcherValues: ReadonlyMap<string, number>): RunArgs {
  const own: Record<string, string[]> = {}
  const flags = new Set<string>()
  const launcherArgs: string[] = []
  let ownEnded = false
  let i = 0
  while (i < argv.length) {
    const arg = argv[i] as string
    if (arg === '--' && !ownEnded) { ownEnded = true; i++; continue }
    if (!arg.startsWith('-') || arg === '-') break
    const [name, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined]
    if (!ownEnded && OWN_FLAGS.has(name)) {
      flags.add(name)
      i++
    } else if (!ownEnded && OWN_VALUES.has(name)) {
      const value = inline ?? argv[i + 1]
      if (value === undefined || (inline === undefined && value.startsWith('-'))) throw usageError(`${name} needs a value`)
      ;(own[name] ??= []).push(value)
      i += inline === undefined ? 2 : 1
    } else {
      const count = inline !== undefined ? 0 : launcherValues.get(arg) ?? 0
      if (i + count >= argv.length) throw usageError(`launcher option ${arg} needs ${count} value${count === 1 ? '' : 's'}`)
      if (count === 1 && RANK_COUNT_OPTIONS.has(arg)) parseRankCount(arg, argv[i + 1] as string)
      launcherArgs.push(...argv.slice(i, i + 1 + count))
      i += 1 + count
    }
  }
  const program = argv.slice(i)
  if (program.length === 0) throw usageError('no program to run', 'p2prun -n 4 ./app [args…]')
  const last = (name: string) => own[name]?.[own[name].length - 1]
  const settings: Partial<Record<SettingName, string | boolean>> = {}
  for (const name of SETTING_VALUES) if (own[`--${name}`]) settings[name] = last(`--${name}`) as string
  for (const name of SETTING_FLAGS) if (flags.has(`--${name}`)) settings[name] = true
  return {
    options: {
      libs: own['--libs'] ?? [],
      seeder: last('--seeder'),
      config: last('--config'),
      mountPoint: last('--mount-point'),
      dryRun: flags.has('--dry-run'),
      stats: flags.has('--stats'),
      settings
    },
    launcherArgs,
    program
  }
}

/**
 * The options that set up a launch's set and head, as splitRunArgs reads them back: what
 * `p2prun head` is given in the commands --dry-run prints (not the launcher, --dry-run, --stats).
 */
export function setOptionsOf (options: RunOptions): string[] {
  const settings = Object.entries(options.settings).filter(([name]) => name !== 'launcher')
  return [
    ...options.libs.flatMap((dir) => ['--libs', dir]),
    ...(options.config !== undefined ? ['--config', options.config] : []),
    ...(options.mountPoint !== undefined ? ['--mount-point', options.mountPoint] : []),
    ...settings.flatMap(([name, value]) => value === true ? [`--${name}`] : [`--${name}`, String(value)])
  ]
}

/** What a launch serves: its --libs, else the settings' `libs`, else what the program loads (auto). */
export function libsToServe (options: RunOptions, fromSettings: readonly string[] | undefined): readonly string[] {
  const given = options.libs.length > 0 ? options.libs : (fromSettings ?? [])
  return given.length > 0 ? given : [AUTO_LIBS]
}

/** `-n`'s value as a number of ranks; anything but a positive whole number is a usage error. */
export function parseRankCount (option: string, raw: string): number {
  if (!/^\d+$/.test(raw) || Number(raw) < 1) {
    throw usageError(`${option} expects a positive whole number, got ${quote(raw)}`, `for example ${option} 4`)
  }
  return Number(raw)
}
