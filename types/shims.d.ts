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

declare module 'bittorrent-dht' {
  import { EventEmitter } from 'node:events'
  import type { Socket } from 'node:dgram'
  interface DhtOptions {
    /** host:port strings, or false: no bootstrap at all. */
    bootstrap?: string[] | false
    /** The UDP socket to use (passed down to k-rpc-socket). */
    socket?: Socket
    /** Announced peers kept per round of its peer store (it keeps two rounds); default 10,000. */
    maxPeers?: number
  }
  export default class DHT extends EventEmitter {
    constructor (opts?: DhtOptions)
    readonly nodes: { count (): number }
    listen (port: number, host: string, onListening?: () => void): void
    address (): { address: string, port: number }
    lookup (infoHash: Buffer, cb?: (err: Error | null, n: number) => void): () => void
    announce (infoHash: Buffer, port: number, cb?: (err: Error | null) => void): void
    addNode (node: { host: string, port: number }): void
    destroy (cb?: () => void): void
  }
}

// Only the interoperability test drives webtorrent: a stock BitTorrent client against p2prun's own.
declare module 'webtorrent' {
  import { EventEmitter } from 'node:events'

  export interface Torrent extends EventEmitter {
    readonly done: boolean
    readonly downloaded: number
    readonly uploaded: number
    addPeer (peer: string): boolean
  }

  export interface ClientOptions {
    torrentPort?: number
    dht?: boolean
    lsd?: boolean
    utPex?: boolean
    natUpnp?: boolean
    natPmp?: boolean
    utp?: boolean
    webSeeds?: boolean
    tracker?: false
    secure?: number
  }

  export default class WebTorrent extends EventEmitter {
    constructor (opts?: ClientOptions)
    readonly torrentPort: number
    add (torrentId: Uint8Array, opts: { path: string, announce?: string[] }, onTorrent?: (torrent: Torrent) => void): Torrent
    address (): { address: string, port: number } | null
    destroy (cb?: (err?: Error | null) => void): void
  }
}
