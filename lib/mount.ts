// Mount lifecycle: checks what a mount needs (a FUSE device, fusermount, an empty mount point) up
// front, so failures are one clear line; runs p2prun's native FUSE server (native/fuse-server.c)
// for a LibraryFs and hands it the requests it forwards; and can remove a mount whose serving
// process died.
import { constants, type Stats } from 'node:fs'
import { access, mkdir, readdir, readFile, readlink, rm, rmdir, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { fuseError } from './errors.ts'
import { findExecutable } from './files.ts'
import type { LibraryFs, Replies, ServerCounts } from './fs.ts'
import { FuseEvent, requireNative, type FuseEventListener, type FuseHandle } from './native.ts'

export interface MountOptions {
  /** Shown as the mount's source in /proc/mounts. */
  readonly fsname: string
  readonly allowOther: boolean
  /** How long the kernel may cache entries and attributes: the content never changes. */
  readonly cacheSeconds: number
  /** How long it may cache failed lookups (the loader's misses along LD_LIBRARY_PATH). */
  readonly negativeCacheSeconds: number
  /** The FUSE device to require (a test knob; always /dev/fuse in real use). */
  readonly device: string
  /** Told if the mount goes away without unmount() (someone else unmounted it). */
  readonly log: (line: string) => void
}

export interface Mounted {
  readonly mountPoint: string
  /** The server's counts so far; after unmount, its final ones. */
  counters (): ServerCounts
  unmount (): Promise<void>
}

export async function mountFs (mountPoint: string, fs: LibraryFs, opts: MountOptions): Promise<Mounted> {
  const mnt = path.resolve(mountPoint)
  await checkFuse(opts.device)
  const server = requireNative('the FUSE server', fuseError)
  await prepareMountPoint(mnt)
  let handle: FuseHandle | undefined
  let final: ServerCounts | undefined
  // Set before the handle dies: answers that come later are dropped (the kernel has failed them).
  const live = () => (final === undefined ? handle : undefined)
  const replies: Replies = {
    data: (id, bytes, length) => { const h = live(); if (h) server.fuseReplyData(h, id, bytes, length) },
    stored: (id) => { const h = live(); return h ? server.fuseReplyStored(h, id) : true },
    open: (id) => { const h = live(); if (h) server.fuseReplyOpen(h, id) },
    error: (id, errno) => { const h = live(); if (h) server.fuseReplyError(h, id, errno) }
  }
  let stopping = false
  let settleMount: (failure: string | undefined) => void = () => {}
  const mounting = new Promise<string | undefined>((resolve) => { settleMount = resolve })
  const onEvent: FuseEventListener = (kind, id, ino, offset, size, message) => {
    if (kind === FuseEvent.Mounted) settleMount(size === 0 ? undefined : message)
    else if (kind === FuseEvent.Open) fs.open(id, ino, replies)
    else if (kind === FuseEvent.Read) fs.read(id, ino, offset, size, replies)
    else if (kind === FuseEvent.Interrupt) fs.interrupt(id)
    else if (kind === FuseEvent.Ended && !stopping) opts.log(`the mount at ${mnt} went away: ${message}`)
  }
  try {
    handle = server.fuseStart({
      mountPoint: mnt,
      options: mountOptions(opts),
      cacheSeconds: opts.cacheSeconds,
      negativeCacheSeconds: opts.negativeCacheSeconds,
      view: fs.localView(),
      table: fs.table
    }, onEvent)
  } catch (err) {
    await removeMadeMountPoint(mnt)
    throw fuseError(`cannot start the FUSE server for ${mnt}: ${(err as Error).message}`, 'report this as a bug in p2prun', err)
  }
  const h = handle
  const failure = await mounting
  if (failure !== undefined) {
    await server.fuseStop(h)
    await removeMadeMountPoint(mnt)
    throw fuseError(`cannot mount FUSE at ${mnt}: ${failure}`,
      'check that this user may mount FUSE file systems (root, or fusermount with user_allow_other)')
  }
  let unmounting: Promise<void> | undefined
  return {
    mountPoint: mnt,
    counters: () => final ?? server.fuseCounters(h),
    unmount: () => (unmounting ??= (async () => {
      stopping = true
      fs.abortAll()
      final = await server.fuseStop(h)
      // The server unmounts lazily; if even that failed (fusermount missing or refused), say so.
      if (await isMounted(mnt)) await lazyUnmount(mnt)
      await removeMadeMountPoint(mnt)
    })())
  }
}

/**
 * libfuse3's options: "ro" (the kernel refuses writes before they reach us), default_permissions
 * (the kernel checks modes, so access() needs no round trip). fuse3 always allows a non-empty
 * mount point; p2prun's own check (prepareMountPoint) allows only MADE_MARKER there.
 */
function mountOptions (opts: MountOptions): string {
  const fsname = opts.fsname.replace(/[^\w.:@+-]/g, '_') // libfuse splits on commas
  return ['ro', `fsname=${fsname}`, 'subtype=p2prun', 'default_permissions', ...(opts.allowOther ? ['allow_other'] : [])].join(',')
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
 * one that created it (nodes emulated on one host, each in its own mount namespace, share it). The
 * parent directories a mount created hold it too, and go the same way once nothing else is in them.
 */
const MADE_MARKER = '.p2prun-mount-point'

async function removeMadeMountPoint (mnt: string): Promise<void> {
  const names = await readdir(mnt).catch(() => [])
  if (names.length !== 1 || names[0] !== MADE_MARKER || await mountedElsewhere(mnt)) return
  await rm(path.join(mnt, MADE_MARKER), { force: true })
  await rmdir(mnt).catch(() => {}) // another agent leaving at the same moment may have removed it
  // Then the parents p2prun made, while nothing but their marker is left in them (another node's
  // mount point under the same parent keeps it).
  for (let dir = path.dirname(mnt); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const left = await readdir(dir).catch(() => [])
    if (left.length !== 1 || left[0] !== MADE_MARKER) return
    await rm(path.join(dir, MADE_MARKER), { force: true })
    if (!await rmdir(dir).then(() => true, () => false)) return
  }
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

/**
 * What a mount needs, checked before anything is made: the FUSE device, fusermount, a mount point
 * that is absent or an empty directory nothing is mounted on. The native agent makes its mount
 * point by the same rules (native/agent/mount-point.c); its parent checks here first
 * (native-agent.ts), so both agents refuse the same things with the same lines.
 */
export async function checkMountable (mountPoint: string, device: string): Promise<void> {
  await checkFuse(device)
  await checkMountPoint(path.resolve(mountPoint))
}

/** Throws if `mnt` cannot be a mount point; returns whether it exists (else it is made). */
async function checkMountPoint (mnt: string): Promise<boolean> {
  let st: Stats
  try {
    st = await stat(mnt)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOTCONN') {
      throw fuseError(`${mnt} is a dead FUSE mount`, `remove it with \`p2prun umount ${mnt}\``, err)
    }
    if (code !== 'ENOENT') throw fuseError(`cannot use mount point ${mnt}: ${code}`, 'choose another mount point', err)
    return false
  }
  if (!st.isDirectory()) throw fuseError(`mount point ${mnt} is not a directory`, 'choose a directory, or a path that does not exist yet')
  if (await isMounted(mnt)) throw fuseError(`mount point ${mnt} is busy: something is mounted there`, `run \`p2prun umount ${mnt}\` first`)
  if ((await readdir(mnt)).some((name) => name !== MADE_MARKER)) {
    throw fuseError(`mount point ${mnt} is not empty`, 'choose an empty directory, so nothing is hidden under the mount')
  }
  return true
}

async function prepareMountPoint (mnt: string): Promise<void> {
  if (await checkMountPoint(mnt)) return
  // Every directory made here gets the marker, the parents too (/tmp/p2prun/<infohash>/ under
  // the default template): whoever leaves last removes what p2prun made, and nothing else.
  const first = await mkdir(mnt, { recursive: true })
  for (let dir = mnt; first !== undefined; dir = path.dirname(dir)) {
    await writeFile(path.join(dir, MADE_MARKER), '')
    if (dir === first || dir === path.dirname(dir)) break
  }
}
