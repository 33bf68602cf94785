// Loopback ports for tests: any free ones, or a run a test must name before anything listens on
// them (a node list's port + K), taken below the kernel's ephemeral range, which the system hands to outgoing connections at any moment
// (a base drawn from 20000-40000 once met a Slurm daemon's connection on 35766, the prolog's agent
// failed with EADDRINUSE, the node was drained and the job held), and checked free by binding.
import { readFile } from 'node:fs/promises'
import { createServer, type AddressInfo, type Server } from 'node:net'

const LOWEST = 10_000

/** `count` ports free on 127.0.0.1 now, any the system gives: each bound, then all released. */
export async function freePorts (count: number): Promise<number[]> {
  const ports = await bindEach(Array.from({ length: count }, () => 0))
  if (ports.some((p) => p === undefined)) throw new Error('cannot bind a loopback port')
  return ports as number[]
}

/** `count` consecutive loopback ports free now (each bound, then all released), outside the ephemeral range. */
export async function freePortRange (count: number): Promise<number> {
  const [low = 32_768, high = 60_999] = (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).trim().split(/\s+/).map(Number)
  const [from, to] = low - count > LOWEST ? [LOWEST, low - count] : [high + 1, 65_536 - count]
  for (;;) {
    const base = from + Math.floor(Math.random() * (to - from))
    if ((await bindEach(Array.from({ length: count }, (_, k) => base + k))).every((p) => p !== undefined)) return base
  }
}

/** Listens on each port of 127.0.0.1 (0: any), all at once, then closes them all: the ports bound, undefined where the bind failed. */
async function bindEach (ports: readonly number[]): Promise<Array<number | undefined>> {
  const servers = await Promise.all(ports.map((port) => new Promise<Server | undefined>((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(undefined))
    server.listen(port, '127.0.0.1', () => resolve(server))
  })))
  const bound = servers.map((s) => s && (s.address() as AddressInfo).port)
  await Promise.all(servers.map((s) => s && new Promise((resolve) => s.close(resolve))))
  return bound
}
