// p2prun's servers listen through lib/swarm/listen.ts: numeric addresses bound by the addon
// (native/listen-socket.c), names by Node; either way the server works as Node's own listen makes
// it, and a failure carries the system's code for the caller's message.
import dns from 'node:dns/promises'
import { once } from 'node:events'
import { closeSync } from 'node:fs'
import net from 'node:net'
import t, { type Test } from 'tap'
import { requireNative } from '../lib/native.ts'
import { listenOn } from '../lib/swarm/listen.ts'

const native = requireNative('the listen test', (m, hint) => new Error(`${m} (${hint})`))

async function echoes (t: Test, server: net.Server): Promise<void> {
  server.on('connection', (socket) => socket.pipe(socket))
  const { address, port } = server.address() as net.AddressInfo
  const client = net.connect(port, address)
  t.teardown(() => client.destroy())
  client.end('ping')
  const [reply] = await once(client, 'data')
  t.equal(String(reply), 'ping', `a client reaches ${address}:${port}`)
}

t.test('a numeric address is bound by the addon, names are left to Node; the server works either way', async (t) => {
  const fd = native.listenTcp('127.0.0.1', 0)
  t.type(fd, 'number', 'the addon binds an IPv4 address')
  t.equal(native.listenTcp('localhost', 0), undefined, 'and leaves names to Node')
  new net.Server().listen({ fd }).close()
  // A minimal system (a fresh Debian chroot) may have no /etc/hosts: then no name resolves.
  const named = await dns.lookup('localhost', { family: 4 }).then(() => true, () => false)
  for (const host of named ? ['127.0.0.1', 'localhost'] : ['127.0.0.1']) {
    const server = net.createServer()
    t.teardown(() => server.close())
    await listenOn(server, host, 0)
    const { port } = server.address() as net.AddressInfo
    t.ok(port > 0, `${host}: a free port`)
    await echoes(t, server)
  }
})

t.test('an IPv6 address is bound by the addon too', { skip: !hasIpv6Loopback() && 'no IPv6 loopback here' }, async (t) => {
  const server = net.createServer()
  t.teardown(() => server.close())
  await listenOn(server, '::1', 0)
  t.equal((server.address() as net.AddressInfo).family, 'IPv6')
  await echoes(t, server)
})

t.test('a port in use, or an address not of this host, fails with the system\'s code', async (t) => {
  const first = net.createServer()
  t.teardown(() => first.close())
  await listenOn(first, '127.0.0.1', 0)
  const { port } = first.address() as net.AddressInfo
  const second = net.createServer()
  await t.rejects(listenOn(second, '127.0.0.1', port), { code: 'EADDRINUSE' })
  t.notOk(second.listening)
  // TEST-NET-1 (RFC 5737): documentation only, never a host's own address.
  await t.rejects(listenOn(net.createServer(), '192.0.2.1', 0), { code: 'EADDRNOTAVAIL' })
})

function hasIpv6Loopback (): boolean {
  try {
    closeSync(native.listenTcp('::1', 0) as number)
    return true
  } catch {
    return false
  }
}
