// Types for the untyped dependencies, limited to what p2prun uses.

declare module 'bencode' {
  const bencode: {
    encode (value: unknown): Uint8Array
    decode (data: Uint8Array, encoding?: string): unknown
  }
  export default bencode
}

declare module 'create-torrent' {
  import type { Readable } from 'node:stream'
  interface CreateTorrentOptions {
    name?: string
    pieceLength?: number
    private?: boolean
    announceList?: string[][]
    creationDate?: Date
    createdBy?: string
    filterJunkFiles?: boolean
  }
  export default function createTorrent (
    input: Readable[],
    opts: CreateTorrentOptions,
    cb: (err: Error | null, torrent: Uint8Array) => void
  ): void
}

declare module 'bittorrent-tracker' {
  import { EventEmitter } from 'node:events'
  import type { IncomingMessage, Server as HttpServer } from 'node:http'
  export interface AnnounceParams {
    info_hash: string
    numwant: number
    httpReq?: IncomingMessage
  }
  export interface TrackerServerOptions {
    http?: boolean
    udp?: boolean
    ws?: boolean
    stats?: boolean
    interval?: number
    peersCacheLength?: number
    peersCacheTtl?: number
    filter?: (infoHash: string, params: AnnounceParams, cb: (err?: Error | null) => void) => void
  }
  export class Server extends EventEmitter {
    constructor (opts?: TrackerServerOptions)
    http: HttpServer | null
    torrents: Record<string, { peers: { length: number } }>
    listen (port: number, hostname: string, onlistening?: () => void): void
    close (cb?: () => void): void
  }
}

declare module 'webtorrent' {
  import { EventEmitter } from 'node:events'

  export interface Wire extends EventEmitter {
    peerId: string | undefined
    remoteAddress: string | undefined
    remotePort: number | undefined
    downloaded: number
    uploaded: number
  }

  export interface BitField { get (index: number): boolean }

  export interface ChunkStore {
    readonly chunkLength: number
    put (index: number, buf: Uint8Array, cb?: (err: Error | null) => void): void
    get (index: number, opts: { offset?: number, length?: number } | null | undefined,
      cb: (err: Error | null, buf?: Uint8Array) => void): void
    close (cb?: (err?: Error | null) => void): void
    destroy (cb?: (err?: Error | null) => void): void
  }

  export interface ChunkStoreOptions {
    length: number
    path?: string
    [key: string]: unknown
  }

  export type ChunkStoreConstructor = new (chunkLength: number, opts: ChunkStoreOptions) => ChunkStore

  export interface TorrentOptions {
    announce?: string[]
    path?: string
    store?: ChunkStoreConstructor
    storeOpts?: Record<string, unknown>
    storeCacheSlots?: number
    skipVerify?: boolean
    deselect?: boolean
    strategy?: 'rarest' | 'sequential'
    uploads?: number | false
    alwaysChokeSeeders?: boolean
    private?: boolean
    destroyStoreOnDestroy?: boolean
  }

  export interface Torrent extends EventEmitter {
    readonly infoHash: string
    readonly ready: boolean
    readonly done: boolean
    readonly destroyed: boolean
    readonly progress: number
    readonly downloaded: number
    readonly uploaded: number
    readonly length: number
    readonly pieceLength: number
    readonly numPeers: number
    readonly wires: Wire[]
    readonly bitfield: BitField
    readonly pieces: unknown[]
    select (start: number, end: number, priority?: number, notify?: () => void): void
    deselect (start: number, end: number): void
    critical (start: number, end: number): void
    addPeer (peer: string): boolean
    destroy (opts?: { destroyStore?: boolean }, cb?: (err?: Error | null) => void): void
  }

  export interface ClientOptions {
    peerId?: string
    torrentPort?: number
    maxConns?: number
    dht?: boolean
    lsd?: boolean
    utPex?: boolean
    natUpnp?: boolean
    natPmp?: boolean
    utp?: boolean
    webSeeds?: boolean
    secure?: number
    uploadLimit?: number
    tracker?: false | { getAnnounceOpts?: () => Record<string, unknown> }
  }

  export default class WebTorrent extends EventEmitter {
    constructor (opts?: ClientOptions)
    readonly torrentPort: number
    readonly peerId: string
    add (torrentId: Uint8Array | string, opts: TorrentOptions, onTorrent?: (torrent: Torrent) => void): Torrent
    address (): { address: string, port: number } | null
    destroy (cb?: (err?: Error | null) => void): void
  }
}

declare module 'fuse-native' {
  type Timeouts = number | false | Record<string, number | false>
  interface FuseOptions {
    fsname?: string
    subtype?: string
    defaultPermissions?: boolean
    allowOther?: boolean
    kernelCache?: boolean
    entryTimeout?: number
    attrTimeout?: number
    timeout?: Timeouts
  }
  export default class Fuse {
    constructor (mountPoint: string, ops: object, opts?: FuseOptions)
    mount (cb: (err: Error | null) => void): void
    unmount (cb: (err: Error | null) => void): void
  }
}
