// `p2prun [p2prun options] [launcher options] [--] PROGRAM [ARGS…]`: separates p2prun's own
// options, the launcher's (passed on unchanged) and the program. Launcher options that take a value
// come from the chosen adapter's table; `--opt=value` is always one word; after `--`, p2prun
// recognises none of its own options.
import { usageError } from '../lib/errors.ts'

export interface RunOptions {
  readonly libs: readonly string[]
  readonly launcher?: string
  readonly seeder?: string
  readonly mode?: string
  readonly config?: string
  readonly mountPoint?: string
  readonly dryRun: boolean
  readonly quiet: boolean
  readonly stats: boolean
}

export interface RunArgs {
  readonly options: RunOptions
  readonly launcherArgs: readonly string[]
  readonly program: readonly string[]
}

const OWN_VALUES = new Set(['--libs', '--launcher', '--seeder', '--mode', '--config', '--mount-point'])
const OWN_FLAGS = new Set(['--dry-run', '--quiet', '--stats'])

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
      launcherArgs.push(...argv.slice(i, i + 1 + count))
      i += 1 + count
    }
  }
  const program = argv.slice(i)
  if (program.length === 0) throw usageError('no program to run', 'p2prun -n 4 --libs ./libs ./app [args…]')
  const last = (name: string) => own[name]?.[own[name].length - 1]
  return {
    options: {
      libs: own['--libs'] ?? [],
      launcher: last('--launcher'),
      seeder: last('--seeder'),
      mode: last('--mode'),
      config: last('--config'),
      mountPoint: last('--mount-point'),
      dryRun: flags.has('--dry-run'),
      quiet: flags.has('--quiet'),
      stats: flags.has('--stats')
    },
    launcherArgs,
    program
  }
}
