// The emulated cluster (bench/cluster.sh) as the benchmark runners drive it.
import { execa } from 'execa'
import path from 'node:path'
import { ROOT } from './workload.ts'

export const CLUSTER = path.join(ROOT, 'bench/cluster.sh')

/** Bytes the server node has sent on its link: the same measure for every method. */
export async function serverTxBytes (): Promise<number> {
  const r = await execa('ip', ['-n', 'p2pb-s0', '-s', '-j', 'link', 'show', 'eth0'])
  return (JSON.parse(r.stdout) as { stats64: { tx: { bytes: number } } }[])[0]?.stats64.tx.bytes ?? 0
}
