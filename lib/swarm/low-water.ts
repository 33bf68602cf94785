// The socket receive low-water mark (SO_RCVLOWAT), through p2prun's addon (lib/native.ts): see the
// wire's awaitBytes. Without the addon (a checkout never built) sockets simply wake for every segment.
import type { Socket } from 'node:net'
import { native } from '../native.ts'

/** Sets a connected socket's low-water mark; undefined where the addon is not built. */
export const setRcvLowat: ((socket: Socket, bytes: number) => void) | undefined = native && ((socket, bytes) => {
  // Node keeps the descriptor on its private handle; a socket closing under us has none left.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd
  if (fd === undefined || fd < 0) return
  try {
    native?.setRcvLowat(fd, bytes)
  } catch {
    // A socket the kernel is already closing: its last bytes wake the reader anyway.
  }
})
