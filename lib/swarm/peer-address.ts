// Peer addresses as p2prun passes them around ("host:port") and as BitTorrent carries them:
// compact peer lists (BEP 23: 4 bytes of IPv4 and 2 of port each), in tracker replies and in peer
// exchange. The one place that reads and writes either.

/** host:port (an IPv6 host in brackets), or a URL (a tracker's), to its host and port; undefined for anything else. */
export function hostPort (address: string): { host: string, port: number } | undefined {
  let host: string
  let port: number
  if (/^[a-z]+:\/\//i.test(address)) {
    let url: URL
    try {
      url = new URL(address)
    } catch {
      return undefined
    }
    host = url.hostname
    port = Number(url.port || 80)
  } else {
    const colon = address.lastIndexOf(':')
    host = address.slice(0, colon)
    port = Number(address.slice(colon + 1))
  }
  host = host.replace(/^\[|\]$/g, '')
  return host && Number.isInteger(port) && port > 0 && port <= 65535 ? { host, port } : undefined
}

/** A socket's remote address as peers are listed: an IPv4 client of a dual-stack socket shows as ::ffff:a.b.c.d. */
export function plainIp (remote: string | undefined): string {
  return (remote ?? '').replace(/^::ffff:/, '')
}

/** IPv4 host:port addresses as a compact peer list; others (IPv6, names) are left out, as BEP 23 has no room for them. */
export function encodeCompact (addresses: readonly string[]): Buffer {
  const out: Buffer[] = []
  for (const address of addresses) {
    const m = address.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3}):(\d{1,5})$/)
    const numbers = m ? m.slice(1).map(Number) : []
    const port = numbers[4] ?? 0
    if (numbers.length !== 5 || numbers.slice(0, 4).some((o) => o > 255) || port < 1 || port > 65535) continue
    const entry = Buffer.alloc(6)
    for (let i = 0; i < 4; i++) entry[i] = numbers[i] as number
    entry.writeUInt16BE(port, 4)
    out.push(entry)
  }
  return Buffer.concat(out)
}

/** A compact peer list's addresses (a trailing partial entry and port 0 are no address). */
export function decodeCompact (bytes: Uint8Array): string[] {
  const out: string[] = []
  for (let i = 0; i + 6 <= bytes.length; i += 6) {
    const port = ((bytes[i + 4] as number) << 8) | (bytes[i + 5] as number)
    if (port > 0) out.push(`${bytes[i]}.${bytes[i + 1]}.${bytes[i + 2]}.${bytes[i + 3]}:${port}`)
  }
  return out
}
