// The address of this host's interface that faces the job's head: a node listens there only, so
// peers reach it where the tracker saw it announce from, and no other network of the host is open.
import dgram from 'node:dgram'
import { swarmError } from '../errors.ts'
import { hostPort } from './peer-address.ts'

/**
 * The local address the kernel would send from toward `address` (host:port, or a URL): a UDP
 * socket's connect picks it from the routing table without sending anything.
 */
export async function addressToward (address: string): Promise<string> {
  const target = hostPort(address)
  if (!target) throw swarmError(`cannot find this host's address toward ${address}: not an address`, 'check the head\'s address in the job (--advertise on the head)')
  const { host, port } = target
  // An IPv6 literal is the only host with a colon; net.isIPv6 would compile its large regex first,
  // ~6 ms of every agent's start.
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4')
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.connect(port, host, () => resolve())
    })
    return socket.address().address
  } catch (err) {
    throw swarmError(`cannot find this host's address toward ${host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      'check the head\'s address in the job (--advertise on the head) and this node\'s routes', err)
  } finally {
    socket.close()
  }
}
