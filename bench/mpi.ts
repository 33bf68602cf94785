// HPCC as one MPI job across N emulated nodes, started by real `mpirun` (bench/rsh-agent.sh stands
// in for ssh), once through `p2prun -n N` (libraries and Open MPI's plugins from the p2prun mount on
// every node) and once by the same `mpirun` reading them from an sshfs mount of the server node.
// Measured: the launch, from the start until rank 0 writes HPCC's report header. Rank 0 writes it
// after MPI_Init, which returns only once every rank has loaded its libraries and plugins and
// joined the job. The job is then stopped: HPCC's own tests over shaped links take minutes and say
// nothing about loading.
// Usage: npm run bench:mpi -- [--nodes 4] [--rate 100mbit] [--discovery tracker|nodes]
// (nodes: the agents take their peers from the hostfile's hosts, the nodes' own addresses)
import { execa, type ResultPromise } from 'execa'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { CLUSTER, mpiAcrossNodes as mpiArgs, serverTxBytes, serveSftp, sshfsMount, writeHostfile } from './cluster.ts'
import { P2PRUN, ROOT, workload } from './workload.ts'

const RANK = path.join(ROOT, 'examples/hpcc/rank.sh')
const MNT = '/p2pb/mnt'
const HEADER = 'HPC Challenge Benchmark'

const { values: opts } = parseArgs({
  options: { nodes: { type: 'string', default: '4' }, rate: { type: 'string', default: '100mbit' }, discovery: { type: 'string', default: 'tracker' } }
})
const n = Number(opts.nodes)
if (!Number.isInteger(n) || n < 2) throw new Error(`--nodes ${opts.nodes}: expected one node count of at least 2, e.g. --nodes 8 (run once per count)`)

/** Seconds until `report` holds HPCC's header; the job failing first is an error. */
async function untilHeader (job: ResultPromise, report: string, t0: number): Promise<number> {
  let exited: unknown
  job.then((r) => { exited = r }, (err: unknown) => { exited = err })
  for (;;) {
    if ((await readFile(report, 'utf8').catch(() => '')).includes(HEADER)) return (performance.now() - t0) / 1000
    if (exited !== undefined) throw new Error(`the job ended before HPCC started: ${String((exited as { stderr?: string }).stderr ?? exited).slice(-800)}`)
    await new Promise((resolve) => setTimeout(resolve, 20)) // the measurement's resolution
  }
}

/** One launch in a fresh working directory (HPCC reads its input and writes its report there). */
async function launch (command: string, args: string[], env: Record<string, string> = {}): Promise<{ seconds: number, serverMB: number }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'p2prun-bench-mpi-'))
  try {
    await writeFile(path.join(dir, 'hpccinf.txt'), await readFile(path.join(ROOT, 'examples/hpcc/hpccinf.txt')))
    const before = await serverTxBytes()
    const t0 = performance.now()
    const job = execa('nsenter', ['--net=/run/netns/p2pb-s0', command, ...args], { cwd: dir, env, reject: false, stdin: 'ignore' })
    try {
      const seconds = await untilHeader(job, path.join(dir, 'hpccoutf.txt'), t0)
      return { seconds, serverMB: ((await serverTxBytes()) - before) / 1e6 }
    } finally {
      job.kill('SIGTERM')
      await job
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/** Node K's mounts of a kind: a stopped job must leave none. */
async function mountsOn (k: number, type: string): Promise<number> {
  const r = await execa(CLUSTER, ['exec', String(k), 'grep', '-c', ` ${type} `, '/proc/self/mounts'], { reject: false })
  return Number(r.stdout.trim() || 0)
}

async function main (): Promise<void> {
  const w = await workload(0, 'hpcc')
  await execa(CLUSTER, ['up', String(n), opts.rate], { stdio: 'inherit' })
  const hostfile = path.join(ROOT, 'bench/work/hosts')
  try {
    await writeHostfile(hostfile, n)
    const dirs = ['lib', 'openmpi', 'pmix']
    const p2p = await launch(P2PRUN, ['-n', String(n), '--launcher', 'openmpi', '--discovery', opts.discovery, ...mpiArgs(hostfile),
      ...dirs.flatMap((d) => ['--libs', path.join(w.set, d)]), '--quiet', RANK])
    const left = (await Promise.all(Array.from({ length: n }, (_, i) => mountsOn(i + 1, 'fuse.p2prun')))).reduce((a, b) => a + b, 0)
    if (left > 0) throw new Error(`${left} p2prun mounts were left on the nodes after the job stopped`)

    const sftp = await serveSftp()
    try {
      for (let k = 1; k <= n; k++) await execa(CLUSTER, ['exec', String(k), 'sh', '-c', sshfsMount(sftp.address, w.set, MNT)])
      const ldPath = dirs.map((d) => `${MNT}/${d}`).join(':')
      const sshfs = await launch('mpirun', ['-n', String(n), ...mpiArgs(hostfile), '-x', `LD_LIBRARY_PATH=${ldPath}`, RANK])
      console.log(`HPCC, ${n} ranks on ${n} nodes, ${opts.rate} per node, ${(w.bytes / 1e6).toFixed(1)} MB of libraries and plugins: until every rank has passed MPI_Init`)
      console.log(`  p2prun -n ${n} (${opts.discovery}): ${p2p.seconds.toFixed(2)} s, server sent ${p2p.serverMB.toFixed(1)} MB`)
      console.log(`  mpirun, sshfs libraries: ${sshfs.seconds.toFixed(2)} s, server sent ${sshfs.serverMB.toFixed(1)} MB`)
    } finally {
      for (let k = 1; k <= n; k++) await execa(CLUSTER, ['exec', String(k), 'fusermount', '-u', '-z', MNT], { reject: false })
      await sftp.stop()
    }
  } finally {
    await execa(CLUSTER, ['down'], { stdio: 'inherit' })
    await rm(hostfile, { force: true })
  }
}

await main()
