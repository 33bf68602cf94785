// p2prun's Node-API addon (native/, built by scripts/build.ts into dist/): the FUSE server the
// mount runs on a thread of its own, the socket low-water mark, the store's mapping and the node's
// peer streams. A checkout never built has none: mounting then says how to build it.
import { distFile, NATIVE_FILE } from './dist-files.ts'
import type { InodeTable, ServerCounts } from './fs.ts'
import type { LocalView } from './store.ts'

/** What the session thread tells JS: the first argument of `onEvent`. */
export const FuseEvent = { Mounted: 0, Open: 1, Read: 2, Interrupt: 3, Ended: 4 } as const
export type FuseEvent = typeof FuseEvent[keyof typeof FuseEvent]

export interface FuseConfig {
  readonly mountPoint: string
  /** libfuse's -o options. */
  readonly options: string
  /** How long the kernel may keep entries and attributes. */
  readonly cacheSeconds: number
  /** How long it may remember that a name does not exist. */
  readonly negativeCacheSeconds: number
  readonly view: LocalView | undefined
  readonly table: InodeTable
}

declare const handleBrand: unique symbol
export type FuseHandle = { readonly [handleBrand]: true }
declare const streamBrand: unique symbol
/** A peer connection moved by the addon (native/peer-stream.c). */
export type PeerStream = { readonly [streamBrand]: true }

/** onEvent(inbox, ended): messages in wire format (with PLACED records) or undefined; why the connection ended (once) or undefined. */
export type PeerStreamListener = (inbox: Buffer | undefined, ended: string | undefined) => void

/**
 * onEvent(kind, id, ino, offset, size, message): Mounted and Ended carry an errno in `size` (0:
 * fine) and libfuse's text; Open and Read are requests to answer with exactly one fuseReply*; an
 * Interrupt says request `id` was already answered EINTR.
 */
export type FuseEventListener = (kind: FuseEvent, id: number, ino: number, offset: number, size: number, message: string) => void

export interface Native {
  setRcvLowat (fd: number, bytes: number): void
  /** A socket listening on host:port (native/listen-socket.c), or undefined if host is not a numeric address; throws as mapStore. */
  listenTcp (host: string, port: number): number | undefined
  /** The file's bytes [0, length) as a Buffer shared with it (native/store-map.c); throws an Error whose `code` is the errno's name. */
  mapStore (fd: number, length: number): Buffer
  /** Allocates the file's blocks for bytes [offset, offset + length), before they are written; throws as mapStore. */
  allocateStore (fd: number, offset: number, length: number): void
  /**
   * Takes over a duplicate of a connected socket's descriptor after its handshake; `initial`: bytes
   * already read from it. Blocks asked for (peerExpect) are written to `storeFd` (the file `store`
   * maps) at piece `index`'s place, unless `have` marks the piece verified. Throws with the system's reason.
   */
  adoptPeerSocket (fd: number, initial: Buffer, store: Buffer, storeFd: number, pieceLength: number, have: Uint8Array, maxMessage: number, onEvent: PeerStreamListener): PeerStream
  /** Queued for the end of the loop turn; bytes inside the store are sent from there, others copied. */
  peerWrite (stream: PeerStream, bytes: Buffer): void
  peerExpect (stream: PeerStream, index: number, begin: number, length: number): void
  peerForget (stream: PeerStream): void
  peerClose (stream: PeerStream): void
  fuseStart (config: FuseConfig, onEvent: FuseEventListener): FuseHandle
  fuseReplyData (handle: FuseHandle, id: number, data: Buffer, length: number): void
  fuseReplyOpen (handle: FuseHandle, id: number): void
  /**
   * Answers a forwarded read from the store (the LocalView's fd), as the server answers a local
   * read (spliced from the store file); false if its bytes are not all there (answered EIO).
   */
  fuseReplyStored (handle: FuseHandle, id: number): boolean
  fuseReplyError (handle: FuseHandle, id: number, errno: number): void
  fuseCounters (handle: FuseHandle): ServerCounts
  /** Ends the session thread and unmounts; resolves with the final counts. The handle is dead afterwards. */
  fuseStop (handle: FuseHandle): Promise<ServerCounts>
  /**
   * Calls onExit once process `pid` has ended (native/exit-watch.c: a pidfd); false if it is gone
   * already. Throws with code ENOSYS where the kernel has no pidfd.
   */
  watchExit (pid: number, onExit: () => void): boolean
  /** _exit(2): the process ends at once, past Node's teardown (see native/process-exit.c). */
  exitNow (code: number): never
}

function load (): Native | undefined {
  try {
    // The bundle's banner already declares a top-level createRequire: this one stays local.
    const { createRequire } = process.getBuiltinModule('node:module')
    return createRequire(import.meta.url)(distFile(NATIVE_FILE)) as Native
  } catch {
    return undefined
  }
}

export const native: Native | undefined = load()

/**
 * The addon, for what cannot run without it (`what`: the FUSE server, the node's store); where it
 * is not built, the error `fail` makes (the caller's kind) says so, with how to build it.
 */
export function requireNative (what: string, fail: (message: string, hint: string) => Error): Native {
  if (native) return native
  throw fail(`p2prun's addon is not built (dist/${NATIVE_FILE} is missing): ${what} runs on it`,
    'run `npm run build` (it needs cc, pkg-config and libfuse3-dev: scripts/setup-system.sh)')
}
