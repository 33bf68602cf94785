// Mount lifecycle: the only code that imports fuse-native. Checks what a mount needs (a FUSE
// device, fusermount, an empty mount point) up front, so failures are one clear line, and can
// remove a mount whose serving process died.
import { constants, type Stats } from 'node:fs'
import { access, mkdir, readdir, readFile, readlink, rm, rmdir, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { execFile } from 'node:child_process'
import Fuse from 'fuse-native'
import { P2prunError } from './errors.ts'
import { findExecutable } from './files.ts'

export interface MountOptions {
  /** Shown as the mount's source in /proc/mounts. */
  readonly fsname: string
  readonly allowOther: boolean
  /** How long the kernel may cache entries, attributes and negative lookups: the content never changes. */
  readonly cacheSeconds: number
  /** The FUSE device to require (a test knob; always /dev/fuse in real use). */
  readonly device: string
}

export interface Mounted {
  readonly mountPoint: string
  unmount (): Promise<void>
}

const fuseError = (message: string, hint: string, cause?: unknown) => new P2prunError('FUSE', message, { hint, cause })

/** Local operations answer fast; open (file mode) and read wait on the swarm, bounded by its stall timeout. */
const OP_TIMEOUTS: Record<string, number | false> = { default: 10_000, open: false, read: false }

export async function mountFs (mountPoint: string, ops: object, opts: MountOptions): Promise<Mounted> {
  const mnt = path.resolve(mountPoint)
  await checkFuse(opts.device)
  await prepareMountPoint(mnt)
  const fuse = new Fuse(mnt, ops, {
    // fuse-native passes only the options it knows, as one "-o a,b,c" string that libfuse splits on
    // commas: "ro", "nonempty" and "negative_timeout" ride along after the fsname. negative_timeout
    // lets the kernel remember ENOENT, so the loader's failed LD_LIBRARY_PATH lookups stop reaching
    // us. nonempty: the only entry allowed under the mount is MADE_MARKER (checked above).
    fsname: [opts.fsname.replace(/[^\w.:@+-]/g, '_'), 'ro', 'nonempty', `negative_timeout=${opts.cacheSeconds}`].join(','),
    subtype: 'p2prun',
    defaultPermissions: true,
    allowOther: opts.allowOther,
    kernelCache: true,
    entryTimeout: opts.cacheSeconds,
    attrTimeout: opts.cacheSeconds,
    timeout: OP_TIMEOUTS
  })
  try {
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())))
  } catch (err) {
    await removeMadeMountPoint(mnt)
    throw fuseError(`cannot mount FUSE at ${mnt}: ${(err as Error).message}`,
      'check that this user may mount FUSE file systems (root, or fusermount with user_allow_other)', err)
  }
  let unmounting: Promise<void> | undefined
  return {
    mountPoint: mnt,
    unmount: () => (unmounting ??= (async () => {
      await new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())))
        .catch(() => lazyUnmount(mnt))
      await removeMadeMountPoint(mnt)
    })())
  }
}

/** Removes a mount even if the process serving it is gone ("Transport endpoint is not connected"). */
export async function lazyUnmount (mountPoint: string): Promise<void> {
  // child_process, not execa: execa costs every node agent 0.08 CPU-seconds to import.
  const stderr = await new Promise<string>((resolve) => {
    execFile('fusermount', ['-u', '-z', mountPoint], (err, _stdout, errText) => resolve(err ? String(errText).trim() || err.message : ''))
  })
  if (stderr !== '' && await isMounted(mountPoint)) {
    throw fuseError(`cannot unmount ${mountPoint}: ${stderr}`, 'run `fusermount -uz` on it as its owner or root')
  }
}

export async function isMounted (mountPoint: string): Promise<boolean> {
  return mountsAt(await readFile('/proc/self/mounts', 'utf8'), 1, path.resolve(mountPoint))
}

/**
 * A mount point p2prun created holds this empty file, hidden under the mount while it is up: it
 * counts as empty for the next mount, and whichever agent leaves it last removes it, not only the
 * one that created it (nodes emulated on one host, each in its own mount namespace, share it).
 */
const MADE_MARKER = '.p2prun-mount-point'

async function removeMadeMountPoint (mnt: string): Promise<void> {
  const names = await readdir(mnt).catch(() => [])
  if (names.length !== 1 || names[0] !== MADE_MARKER || await mountedElsewhere(mnt)) return
  await rm(path.join(mnt, MADE_MARKER), { force: true })
  await rmdir(mnt).catch(() => {}) // another agent leaving at the same moment may have removed it
}

/**
 * Whether a mount namespace of this host other than ours has something mounted at `mnt`. Linux
 * lets rmdir remove a directory that is a mount point in another namespace, and detaches those
 * mounts: emulated nodes lost their libraries mid-load when the first node to finish removed the
 * mount point.
 */
async function mountedElsewhere (mnt: string): Promise<boolean> {
  const seen = new Set([await readlink('/proc/self/ns/mnt')])
  for (const pid of (await readdir('/proc')).filter((name) => /^\d+$/.test(name))) {
    // Processes of other users (EACCES) and processes that just exited (ENOENT) are skipped.
    const ns = await readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined)
    if (ns === undefined || seen.has(ns)) continue
    seen.add(ns)
    const table = await readFile(`/proc/${pid}/mountinfo`, 'utf8').catch(() => '')
    if (mountsAt(table, 4, mnt)) return true
  }
  return false
}

/** Whether a mount table (/proc/mounts: field 1, mountinfo: field 4) has a mount at `target`. */
function mountsAt (table: string, field: number, target: string): boolean {
  // Both escape space, tab, newline and backslash as octal.
  return table.split('\n').some((line) => line.split(' ')[field]?.replace(/\\([0-7]{3})/g, (_, o: string) =>
    String.fromCharCode(parseInt(o, 8))) === target)
}

async function checkFuse (device: string): Promise<void> {
  try {
    await access(device, constants.R_OK | constants.W_OK)
  } catch (err) {
    throw fuseError(`FUSE is not available: ${device} is missing or not accessible (${(err as NodeJS.ErrnoException).code})`,
      'load the fuse kernel module (modprobe fuse), or give the container --device /dev/fuse', err)
  }
  if (!(await findExecutable('fusermount', process.env))) {
    throw fuseError('fusermount is not installed, so mounts could not be removed',
      'install it: apt-get install fuse3 (not the old "fuse" package, which removes fuse3)')
  }
}

async function prepareMountPoint (mnt: string): Promise<void> {
  let st: Stats
  try {
    st = await stat(mnt)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTCONN') {
      throw fuseError(`${mnt} is a dead FUSE mount`, `remove it with \`p2prun umount ${mnt}\``, err)
    }
    if (code !== 'ENOENT') throw fuseError(`cannot use mount point ${mnt}: ${code}`, 'choose another mount point', err)
    await mkdir(mnt, { recursive: true })
    await writeFile(path.join(mnt, MADE_MARKER), '')
    return
  }
  if (!st.isDirectory()) throw fuseError(`mount point ${mnt} is not a directory`, 'choose a directory, or a path that does not exist yet')
  if (await isMounted(mnt)) throw fuseError(`mount point ${mnt} is busy: something is mounted there`, `run \`p2prun umount ${mnt}\` first`)
  if ((await readdir(mnt)).some((name) => name !== MADE_MARKER)) {
    throw fuseError(`mount point ${mnt} is not empty`, 'choose an empty directory, so nothing is hidden under the mount')
  }
}
