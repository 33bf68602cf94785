// KRPC (BEP 5) queries sent by hand over one UDP socket, matched to their answers by transaction id:
// for the tests and the load bench (bench/dht-load.ts) that talk to a DHT node directly.
import bencode from 'bencode'
import { randomBytes } from 'node:crypto'
import type dgram from 'node:dgram'

export interface KrpcReply { t?: Uint8Array, r?: { token?: Uint8Array, values?: Uint8Array[] } }

/**
 * `ask(q, a)` sends query `q` with arguments `a` (a random node id unless `a.id`) to 127.0.0.1:port
 * and resolves with the answer, or with undefined when none came within `timeoutMs` of any of
 * `attempts` sends (a datagram too big to send is no answer at all).
 */
export function krpcClient (socket: dgram.Socket, port: number, { timeoutMs, attempts }: { timeoutMs: number, attempts: number }) {
  const waiting = new Map<string, (reply: KrpcReply) => void>()
  socket.on('message', (msg) => {
    let reply: KrpcReply
    try {
      reply = bencode.decode(msg) as KrpcReply
    } catch {
      return // not an answer: whatever it was for goes unanswered
    }
    const key = Buffer.from(reply.t ?? []).toString('hex')
    waiting.get(key)?.(reply)
    waiting.delete(key)
  })
  let sent = 0
  const once = (q: string, a: Record<string, unknown>) => {
    const tid = Buffer.alloc(4)
    tid.writeUInt32BE(sent++)
    return new Promise<KrpcReply | undefined>((resolve) => {
      const timer = setTimeout(() => { waiting.delete(tid.toString('hex')); resolve(undefined) }, timeoutMs)
      waiting.set(tid.toString('hex'), (reply) => { clearTimeout(timer); resolve(reply) })
      socket.send(bencode.encode({ t: tid, y: 'q', q, a: { id: randomBytes(20), ...a } }), port, '127.0.0.1')
    })
  }
  return async (q: string, a: Record<string, unknown>): Promise<KrpcReply | undefined> => {
    for (let attempt = 0; attempt < attempts; attempt++) {
      const reply = await once(q, a)
      if (reply) return reply
    }
    return undefined
  }
}
