// `p2prun describe DIR -o FILE` and `p2prun inspect FILE`: the description file, made and read.
import path from 'node:path'
import type { Command } from 'commander'
import { formatSummary, summarize, type Description, type DescribedEntry } from '../../lib/description.ts'
import { describeLayout } from '../../lib/describe.ts'
import { layoutOf } from '../../lib/source-layout.ts'
import { printable, quote, usageError } from '../../lib/errors.ts'
import { AUTO_LIBS, LIBS_POLICIES, type LibsPolicy } from '../../lib/config.ts'
import { formatChoices, launchSet } from '../../lib/session/launch-set.ts'
import { DESCRIPTION_SUFFIX, readDescription, writeAtomically } from '../../lib/description-file.ts'
import { action, collect } from '../cli-support.ts'

export function registerDescribe (program: Command): void {
  program.command('describe')
    .description('build the description file (a .torrent plus the tree) of a library directory, or of what a program loads')
    .argument('[dirs...]', 'directory holding the job\'s shared libraries (several: each becomes a top-level directory)')
    .option('--for <program>', 'describe what PROGRAM loads (its load closure, found without running it), with any DIRs')
    .option('--libs-policy <policy>', `with --for: ${LIBS_POLICIES.join(', ')} (see \`p2prun help run\`)`, 'nonsystem')
    .option('-o, --output <file>', 'where to write the description (default: <dir name>.p2p.torrent)')
    .option('--follow-symlinks', 'copy in the targets of symlinks that are absolute or leave the directory')
    .option('--mount-point <template>', 'default mount point on the nodes (%i: infohash prefix, %n: node name)')
    .option('--name <name>', 'torrent name (default: the directory name); part of the infohash')
    .option('--tracker <url>', 'tracker announce URL to record (repeatable)', collect)
    .option('--seeder <host:port>', 'seeder address to record (repeatable)', collect)
    .action(action('describe', async (dirs: string[], opts: {
      output?: string, followSymlinks?: boolean, mountPoint?: string, name?: string, tracker?: string[], seeder?: string[],
      for?: string, libsPolicy: string
    }) => {
      if (opts.mountPoint !== undefined && !path.isAbsolute(opts.mountPoint)) {
        throw usageError(`--mount-point ${opts.mountPoint} is not an absolute path`, 'nodes mount at the same absolute path, e.g. /tmp/p2prun/%i')
      }
      if (dirs.length === 0 && opts.for === undefined) throw usageError('no directory to describe', 'p2prun describe DIR, or p2prun describe --for ./app')
      if (!(LIBS_POLICIES as readonly string[]).includes(opts.libsPolicy)) {
        throw usageError(`--libs-policy expects one of ${LIBS_POLICIES.join(', ')}, got ${quote(opts.libsPolicy)}`)
      }
      const options = { followSymlinks: opts.followSymlinks, mountPoint: opts.mountPoint, name: opts.name, trackers: opts.tracker, seeders: opts.seeder }
      let desc: Description
      if (opts.for !== undefined) {
        const set = await launchSet([...dirs, AUTO_LIBS], opts.for, opts.libsPolicy as LibsPolicy, { env: process.env, cwd: process.cwd(), describe: options })
        process.stdout.write(`${formatChoices(set.choices).join('\n')}\n`)
        desc = set.desc
      } else {
        desc = await describeLayout(layoutOf(dirs), options)
      }
      const out = path.resolve(opts.output ?? `${desc.name}${DESCRIPTION_SUFFIX}`)
      await writeAtomically(out, desc.torrent)
      process.stdout.write(`${desc.infoHash}\n${formatSummary(summarize(desc))}\nwrote ${out}\n`)
    }))
}

export function registerInspect (program: Command): void {
  program.command('inspect')
    .description('print the summary and tree of a description file')
    .argument('<file>', 'description file (.p2p.torrent)')
    .option('--json', 'print one JSON object instead of text')
    .action(action('inspect', async (file: string, opts: { json?: boolean }) => {
      const desc = await readDescription(file)
      process.stdout.write(opts.json ? `${JSON.stringify(toJson(desc))}\n` : formatInspect(desc))
    }))
}

function toJson (desc: Description) {
  return {
    infoHash: desc.infoHash,
    name: desc.name,
    summary: summarize(desc),
    mountPoint: desc.mountPoint,
    trackers: desc.trackers,
    seeders: desc.seeders,
    entries: desc.entries
  }
}

function formatInspect (desc: Description): string {
  const lines = [
    `infohash   ${desc.infoHash}`,
    `name       ${desc.name}`,
    `contents   ${formatSummary(summarize(desc))}`,
    `mount      ${desc.mountPoint}`,
    `trackers   ${desc.trackers.join(' ') || '(none: given at launch)'}`,
    `seeders    ${desc.seeders.join(' ') || '(none: given at launch)'}`,
    '',
    ...desc.entries.map(formatEntry)
  ]
  // Names and link targets are whatever the description says: escaped, they cannot drive the terminal.
  return `${lines.map(printable).join('\n')}\n`
}

function formatEntry (e: DescribedEntry): string {
  const kind = e.type === 'dir' ? 'd' : e.type === 'symlink' ? 'l' : '-'
  const name = e.path === '' ? '.' : e.path
  const tail = e.type === 'symlink' ? ` -> ${e.target}` : ''
  return `${kind}${modeString(e.mode)} ${String(e.size).padStart(12)}  ${name}${tail}`
}

/** The permission column of `ls -l`: set-uid and set-gid show as s in the x place (S without x), sticky as t (T). */
function modeString (mode: number): string {
  const triad = (shift: number, specialBit: number, mark: string) => {
    const bits = mode >> shift
    const execute = mode & specialBit ? (bits & 1 ? mark : mark.toUpperCase()) : (bits & 1 ? 'x' : '-')
    return `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${execute}`
  }
  return triad(6, 0o4000, 's') + triad(3, 0o2000, 's') + triad(0, 0o1000, 't')
}
