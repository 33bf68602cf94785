// How p2prun's servers (a node's peer connections, the head's tracker) start listening: on a
// numeric address through the addon, which binds it as given (native/listen-socket.c: Node's own
// listen looks an address up and compiles its IPv6 pattern on the way, ~10 ms of an agent's start);
// a name, or a checkout without the addon, through Node.
import type { Server } from 'node:net'
import { native } from '../native.ts'

/** Listens on host:port (port 0: any free one); rejects with the system's error, its `code` the errno's name. */
export function listenOn (server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let fd: number | undefined
    try {
      fd = native?.listenTcp(host, port)
    } catch (err) {
      return reject(err)
    }
    server.once('error', reject)
    const listening = () => { server.off('error', reject); resolve() }
    if (fd === undefined) server.listen(port, host, listening)
    else server.listen({ fd }, listening)
  })
}
