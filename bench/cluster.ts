// The emulated cluster (bench/cluster.sh) as the benchmark runners drive it.
import { execa } from 'execa'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { ROOT } from './workload.ts'

export const CLUSTER = path.join(ROOT, 'bench/cluster.sh')

/** Open MPI's options for one job across the compute nodes: one rank per node, started through bench/rsh-agent.sh, TCP on eth0. */
export const mpiAcrossNodes = (hostfile: string) => ['--allow-run-as-root', '--hostfile', hostfile, '--map-by', 'ppr:1:node',
  '--mca', 'plm_rsh_agent', path.join(ROOT, 'bench/rsh-agent.sh'), '--mca', 'plm_rsh_no_tree_spawn', '1',
  '--mca', 'btl', 'self,tcp', '--mca', 'btl_tcp_if_include', 'eth0']

/** A hostfile naming compute nodes 1..n, a slot each. */
export async function writeHostfile (file: string, n: number): Promise<string> {
  await writeFile(file, Array.from({ length: n }, (_, i) => `10.77.1.${i + 1} slots=1\n`).join(''))
  return file
}

/** Bytes the server node has sent on its link: the same measure for every method. */
export async function serverTxBytes (): Promise<number> {
  const r = await execa('ip', ['-n', 'p2pb-s0', '-s', '-j', 'link', 'show', 'eth0'])
  return (JSON.parse(r.stdout) as { stats64: { tx: { bytes: number } } }[])[0]?.stats64.tx.bytes ?? 0
}

const SFTP_PORT = 7000

export interface SftpServer {
  readonly address: string
  stop (): Promise<void>
}

/** The shared-file-system baseline's server: sftp-server behind socat on the server node. */
export async function serveSftp (): Promise<SftpServer> {
  const address = (await execa(CLUSTER, ['addr', '0'])).stdout.trim()
  const socat = execa(CLUSTER, ['exec', '0', 'socat', `TCP-LISTEN:${SFTP_PORT},bind=${address},reuseaddr,fork,nodelay`,
    'EXEC:/usr/lib/openssh/sftp-server,nofork'], { reject: false })
  const stop = async () => { socat.kill('SIGTERM'); await socat }
  const listening = await execa(CLUSTER, ['exec', '0', 'sh', '-c',
    `for i in $(seq 200); do ss -ltn | grep -q ":${SFTP_PORT} " && exit 0; sleep 0.05; done; exit 1`], { reject: false })
  if (listening.exitCode !== 0) {
    await stop()
    throw new Error('socat did not start listening on the server node')
  }
  return { address, stop }
}

/** A node's shell command that mounts the server's `dir` read-only at `mnt`, done once it is mounted. */
export const sshfsMount = (server: string, dir: string, mnt: string) =>
  `mkdir -p ${mnt} && (sshfs -f -o directport=${SFTP_PORT},ro,reconnect ${server}:${dir} ${mnt} > /dev/null 2>&1 &) && ` +
  `for i in $(seq 200); do grep -q " ${mnt} " /proc/self/mounts && exit 0; sleep 0.05; done; exit 1`
