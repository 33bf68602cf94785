// The benchmark: for each node count and method, start the Pynamic-like driver on every emulated
// node at once and measure per-node time until the driver exits (makespan = the slowest node) and
// the bytes the server node sent. Node agents keep seeding until every node's driver is done (as
// in a job, whose ranks end together), then stop: their CPU is counted over that whole life. Methods:
//   local      libraries already node-local (tmpfs): the floor
//   sshfs      one shared file system (sshfs over sftp-server) that every node reads
//   p2p-MODE   p2prun: head on the server node, `p2prun mount --mode MODE` on every node, the Node
//              agent (P2PRUN_AGENT=node); the time includes each node agent's start (Node, imports,
//              mount) — it is part of a launch
//   p2p-MODE+dht  the same, nodes finding each other in a DHT bootstrapped from the head (--discovery dht)
//   p2p-MODE+nodes  the same, each node's peers taken from the list of all nodes (mount --node-list): no tracker
//   p2p-native the native node agent (dist/p2prun-agent, no Node) in p2p-eager's place (p2p-native-block,
//              p2p-native-file: p2p-block's, p2p-file's):
//              the same head, the same command line; +nodes too (the list's flags as `p2prun mount
//              --node-list` gives them it)
//   stage-in   a stock native BitTorrent client (aria2c) on every node downloads the whole set from the
//              same head (open to any client) into the node's tmpfs, then the driver runs from there;
//              each client seeds until every node is done, as an agent does: what issue 12 measures against
// Usage: npm run bench -- [--nodes 4,8,16,32] [--rate 100mbit] [--methods local,sshfs,stage-in,p2p-eager,p2p-block,p2p-file,p2p-native,p2p-native-block]
//                          [--driver driver|driver-dlopen|python] [--libs 200] [--out bench/results]
//                          [--agent PATH]   the p2prun whose node agents run (another build's bin/p2prun, for an A/B;
//                                           p2p-native runs that build's dist/p2prun-agent)
//                          [--open-head]    a head open to any client (for agents of a build without job secrets)
//                          [--agent-stats DIR]  each agent's counters (mount --stats) as DIR/METHOD-N-nK.json
import { execa } from 'execa'
import { mkdir, readFile, realpath, rm, writeFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import path from 'node:path'
import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'
import { plot, rateBits } from './plot.ts'
import { CLUSTER, serverTxBytes, serveSftp, sshfsMount } from './cluster.ts'
import { CLOCK_TICKS, DECOYS, median, P2PRUN, ROOT, serveSet, workload, type Workload } from './workload.ts'
import { NATIVE_AGENT_FILE } from '../lib/dist-files.ts'
import { readDescription } from '../lib/description-file.ts'
import { nodeListFlags } from '../lib/native-agent.ts'
import { nodeListOf } from '../lib/swarm/node-list.ts'


const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string', default: '4,8,16,32' },
    rate: { type: 'string', default: '100mbit' },
    methods: { type: 'string', default: 'local,sshfs,p2p-eager,p2p-block,p2p-file' },
    driver: { type: 'string', default: 'driver' },
    libs: { type: 'string', default: '200' },
    out: { type: 'string', default: path.join(ROOT, 'bench/results') },
    agent: { type: 'string', default: P2PRUN },
    'open-head': { type: 'boolean', default: false },
    'agent-stats': { type: 'string' }
  }
})
// An open head's nodes hold no secret: with one, they would ask the head for a proof it cannot give.
if (opts['open-head']) delete process.env.P2PRUN_SECRET

interface Row {
  nodes: number
  rate: string
  method: string
  makespanS: number
  medianS: number
  /** Each node's time until its driver exited, and until its mount was up, in node order (the tail: which nodes, how many). */
  nodeTimesS: number[]
  nodeStartsS: number[]
  serverBytes: number
  bytesPerNode: number
  agentStartS?: number
  /** CPU seconds one node agent used until its mount was up (Node start, imports, joining, mounting), median. */
  agentStartCpuS?: number
  /** CPU seconds one node agent used over its whole life (user + system; each part), median over nodes. */
  agentCpuS?: number
  agentUserS?: number
  agentSysS?: number
  /** The most any one agent used. */
  agentCpuMaxS?: number
  /** Context switches of one agent (all its threads), voluntary and involuntary, median over nodes. */
  agentVolCtx?: number
  agentInvolCtx?: number
  /** Set bytes a node received per CPU-second of its agent: the data path's efficiency. */
  agentMBPerCpuS?: number
  /** CPU seconds the server-side process (p2prun serve, or socat + sftp-server) used. */
  serverCpuS?: number
  /** CPU seconds the program (the driver) used on one node, user + system and system alone, median over nodes. */
  programCpuS?: number
  programSysS?: number
}

/** Every node script still running: stopped on a failure, and on Ctrl-C before the cluster goes. */
const liveNodes: ReturnType<typeof onNode>[] = []
const stopNodes = async () => {
  for (const c of liveNodes) if (c.pid) try { process.kill(-c.pid, 'SIGTERM') } catch { /* already gone */ }
  await Promise.allSettled(liveNodes)
  liveNodes.length = 0
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { process.exitCode = 130; void stopNodes() })
}

const cluster = (...args: string[]) => execa(CLUSTER, args, { stdio: ['ignore', 'pipe', 'inherit'] })
/** Each node's script in its own process group, so a failed run can stop all of it (agents included). */
const onNode = (k: number, script: string, env: Record<string, string> = {}) =>
  execa(CLUSTER, ['exec', String(k), 'bash', '-c', script], { env: { ...process.env, ...env }, reject: false, stdin: 'pipe', detached: true })

/**
 * A line `label U S more`: the agent's user and system time so far, in clock ticks (fields 14 and 15
 * of /proc/PID/stat), read by bash itself (no awk: a fork and an exec per node inside the clock,
 * ~10 ms of CPU each on this VM).
 */
const agentTicks = (label: string, more = '') => `read -ra s < /proc/$pid/stat; echo ${label} \${s[13]} \${s[14]}${more}`
/** Voluntary and involuntary context switches of all the agent's threads so far. */
const AGENT_CTX = "$(cat /proc/$pid/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}')"
/**
 * Runs the program (the driver), then prints "program U S": the user and system ticks it used, its
 * own and its children's, from the node shell's reaped-children times (fields 16 and 17 of its stat)
 * before and after. What the medium costs the program itself (page faults, lookups, each read's
 * round trip through a FUSE daemon), beside what the agent costs; `read`, not $(...), because a
 * subshell has other children. The program's exit status is kept.
 */
const timed = (run: string) =>
  `read -ra b < /proc/$BASHPID/stat; ${run}; rc=$?; read -ra a < /proc/$BASHPID/stat; ` +
  'echo "program $((a[15] - b[15])) $((a[16] - b[16]))"; (exit $rc)'

/** CPU ticks of every process in the server's namespace, reaped children included, by PID. */
async function serverTicks (): Promise<Map<number, number>> {
  const pids = (await execa('ip', ['netns', 'pids', 'p2pb-s0'])).stdout.split('\n').filter(Boolean).map(Number)
  const ticks = new Map<number, number>()
  for (const pid of pids) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
    // after "(comm)": state is field 3, utime..cstime are fields 14..17
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (f.length > 14) ticks.set(pid, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]))
  }
  return ticks
}

/** Starts one script per node at the same moment (timeNodes); each prints "done" when its driver exited. */
interface NodeTimes {
  times: number[]
  starts: number[]
  startCpus: number[]
  cpus: Array<{ user: number, system: number, voluntary: number, involuntary: number }>
  programCpus: Array<{ user: number, system: number }>
}

/**
 * The common start is a lock every node script waits on (shared) while the runner holds it
 * (exclusive): the runner starts all N scripts first, then lets go. Each node stamps its own lines
 * (bash's EPOCHREALTIME), so neither a late start nor a late read counts: with the agents of the
 * first nodes already moving bytes, the runner, starved on the shared cores, took seconds to start
 * the last of 32 scripts and to read their lines (before 2026-12-04 every node's time included that).
 */
const START_LOCK = '/tmp/p2pb-start.lock'

/**
 * A node's script: `setup` before the common start (untimed: what a site has in place before a job,
 * and the harness's own files), `run` after it. Both in the node's one shell, whose output a
 * stamping loop started before the start reads: inside the clock the shell forks only what a real
 * node would run (the agent or client, the driver). Until 2026-12-05 the clock also held each node's
 * pipeline subshells, `rm`, `mkfifo` and an `awk`: ~1 CPU-s at 32 nodes on this VM's two cores.
 */
interface NodeScript {
  readonly setup?: string
  readonly run: string
}

const stamped = ({ setup, run }: NodeScript) =>
  `${setup ? `{ ${setup}\n} || exit 1; ` : ''}exec 3>&1 > >(while IFS= read -r line; do echo "\${EPOCHREALTIME/./} $line"; done); ` +
  `echo waiting >&3; exec 3>&-; flock -s ${START_LOCK} true; ${run}\n`

async function timeNodes (n: number, script: (k: number) => NodeScript): Promise<NodeTimes> {
  const holder = execa('flock', ['-x', START_LOCK, 'bash', '-c', 'echo locked; cat > /dev/null; echo "${EPOCHREALTIME/./}"'], { stdin: 'pipe', reject: false })
  const heldLines = createInterface({ input: holder.stdout as NodeJS.ReadableStream })
  const heldLine = () => new Promise<string>((resolve) => heldLines.once('line', resolve))
  await heldLine() // locked
  const times: number[] = []
  const starts: number[] = []
  const startCpus: number[] = []
  const cpus: NodeTimes['cpus'] = []
  const programCpus: NodeTimes['programCpus'] = []
  const children: ReturnType<typeof onNode>[] = []
  let waiting = 0
  let release: () => void = () => {}
  const allWaiting = new Promise<void>((resolve) => { release = resolve })
  let done = 0
  const since = (stamp: string) => (Number(stamp) - t0) / 1e6
  let t0 = 0
  const runs = Array.from({ length: n }, (_, i) => i + 1).map(async (k) => {
    const child = onNode(k, stamped(script(k)))
    liveNodes.push(child)
    children.push(child)
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    lines.on('line', (stampedLine) => {
      if (stampedLine === 'waiting') { if (++waiting === n) release(); return }
      const [stamp = '0', line = ''] = stampedLine.split(/ (.*)/)
      if (line === 'mounted') starts[k - 1] = since(stamp)
      if (line === 'done') {
        times[k - 1] = since(stamp)
        // Every node's driver is done: the agents, seeding until now, may stop (their stdin ends).
        if (++done === n) for (const c of children) c.stdin?.end()
      }
      const cpu = line.match(/^cpu (\d+) (\d+) (\d+) (\d+)$/)
      if (cpu) {
        cpus[k - 1] = {
          user: Number(cpu[1]) / CLOCK_TICKS, system: Number(cpu[2]) / CLOCK_TICKS, voluntary: Number(cpu[3]), involuntary: Number(cpu[4])
        }
      }
      const program = line.match(/^program (\d+) (\d+)$/)
      if (program) programCpus[k - 1] = { user: Number(program[1]) / CLOCK_TICKS, system: Number(program[2]) / CLOCK_TICKS }
      const startCpu = line.match(/^startcpu (\d+) (\d+)$/)
      if (startCpu) startCpus[k - 1] = (Number(startCpu[1]) + Number(startCpu[2])) / CLOCK_TICKS
    })
    const r = await child
    if (times[k - 1] === undefined) throw new Error(`node ${k} failed (exit ${r.exitCode}): ${String(r.stderr).slice(-6000)}`)
  })
  const failed = Promise.all(runs).then(() => {})
  try {
    await Promise.race([allWaiting, failed])
    const releasedAt = heldLine()
    holder.stdin?.end()
    t0 = Number(await releasedAt)
    await failed
  } catch (err) {
    holder.stdin?.end()
    // SIGTERM lets every node's agent unmount and remove its store before the namespaces go.
    await stopNodes()
    throw err
  } finally {
    await holder
  }
  liveNodes.length = 0
  return { times, starts, startCpus, cpus, programCpus }
}

function agentCpu (cpus: NodeTimes['cpus'], setBytes: number): Partial<Row> {
  const total = cpus.map((c) => c.user + c.system)
  return {
    agentCpuS: median(total),
    agentUserS: median(cpus.map((c) => c.user)),
    agentSysS: median(cpus.map((c) => c.system)),
    agentCpuMaxS: Math.max(...total),
    agentVolCtx: median(cpus.map((c) => c.voluntary)),
    agentInvolCtx: median(cpus.map((c) => c.involuntary)),
    agentMBPerCpuS: setBytes / 1e6 / median(total)
  }
}

/** Where stage-in's client puts the set on each node (a tmpfs), and its hook when the set is complete. */
const STAGE = '/p2pb/stage'
const STAGED_HOOK = path.join(ROOT, 'bench/staged.sh')
/**
 * aria2c as a job's nodes would run it: no DHT, local discovery or internet trackers (the head's
 * tracker only), peer exchange on, no preallocation (tmpfs), seeding until stopped; every other
 * setting its default (55 peers, its own piece order and choking).
 */
const ARIA2C = '--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=true --seed-ratio=0.0 ' +
  '--file-allocation=none --summary-interval=0 --console-log-level=warn --listen-port=6881 --allow-overwrite=true'

interface SetMover {
  /** Commands that must succeed first, before the clock (the node's own setup: a tmpfs, the decoys). */
  readonly before?: string
  /** Runs it in the background, its first line to the FIFO $f: `ready` (a shell pattern) once the set is there. */
  readonly start: string
  readonly ready: string
  /** The driver, run from where the set is. */
  readonly run: string
  /** What to print when it failed, and what to run last, on success and failure alike. */
  readonly failed?: string
  readonly after?: string
}

/**
 * A node's script around the process that brings it the set and serves it to the others (an agent,
 * or the stage-in client): a FIFO read waits for it to be ready without polling (EOF: it failed);
 * the driver runs; the process seeds to the other nodes until all are done (stdin ends); its CPU is
 * read just before it is stopped. The lines it prints are timeNodes's.
 */
function withSetMover (k: number, m: SetMover): NodeScript {
  const after = m.after ? `${m.after}; ` : ''
  return {
    // The FIFO goes when the shell exits, whichever way.
    setup: `f=/tmp/p2pb-ready-${k}; rm -f $f; mkfifo $f && trap 'rm -f $f' EXIT${m.before ? `; ${m.before}` : ''}`,
    run: `${m.start} & pid=$!; ` +
      `read line < $f; case "$line" in ${m.ready}) ;; *) wait $pid; ${m.failed ? `${m.failed}; ` : ''}${after}exit 1 ;; esac; ` +
      `echo mounted; ${agentTicks('startcpu')}; ${timed(`${m.run} < /dev/null > /dev/null`)} || { kill $pid; wait $pid; ${after}exit 1; }; echo done; ` +
      `cat > /dev/null; ${agentTicks('cpu', ` ${AGENT_CTX}`)}; kill $pid; wait $pid${m.after ? `; ${m.after}` : ''}`
  }
}

/** Where every node's agent listens with +nodes: the same port on each node's own address. */
const NODE_PORT = 6881


async function runMethod (method: string, n: number, w: Workload): Promise<Row> {
  const desc = w.description
  const mnt = '/p2pb/mnt'
  const server = await execa(CLUSTER, ['addr', '0']).then((r) => r.stdout.trim())
  let stopServer = async () => {}
  let nodeScript: (k: number) => NodeScript
  if (method === 'local') {
    // Not timed: the copy into each node's own tmpfs is the "already node-local" starting point.
    await Promise.all(Array.from({ length: n }, (_, i) => onNode(i + 1, `mkdir -p ${mnt} && mount -t tmpfs none ${mnt} && cp -a ${w.set}/. ${mnt}/`)))
    nodeScript = () => ({ run: `${timed(`${w.run(mnt)} > /dev/null`)} && echo done; umount -l ${mnt}` })
  } else if (method === 'sshfs') {
    const sftp = await serveSftp()
    stopServer = sftp.stop
    // Mounted before the clock starts, as a site's shared file system is.
    const mounts = await Promise.all(Array.from({ length: n }, (_, i) => onNode(i + 1, sshfsMount(sftp.address, w.set, mnt))))
    const failed = mounts.findIndex((r) => r.exitCode !== 0)
    if (failed >= 0) {
      await sftp.stop()
      throw new Error(`sshfs did not mount on node ${failed + 1}`)
    }
    nodeScript = () => ({ run: `${timed(`${w.run(mnt)} > /dev/null`)} && echo done; fusermount -u -z ${mnt}` })
  } else if (method === 'stage-in') {
    const serving = await serveSet(w, server, [CLUSTER, 'exec', '0'], true)
    stopServer = serving.stop
    const root = `${STAGE}/${path.basename(w.set)}`
    // aria2c writes "staged" to its fd 3 when the set is complete (its hook), and its end closes it.
    // A torrent has no empty directories: the decoys are made first, so the loader's failed lookups
    // are the same.
    const log = (k: number) => `/tmp/p2pb-aria2c-${k}.log`
    nodeScript = (k) => withSetMover(k, {
      before: `mkdir -p ${STAGE} && mount -t tmpfs none ${STAGE} && mkdir -p ${Array.from({ length: DECOYS }, (_, i) => `${root}/decoy${i}`).join(' ')}`,
      start: `aria2c ${ARIA2C} --bt-tracker=${serving.tracker} --on-bt-download-complete=${STAGED_HOOK} --dir=${STAGE} ${desc} 3> $f > ${log(k)} 2>&1`,
      ready: 'staged',
      run: w.run(root),
      failed: `cat ${log(k)} >&2`,
      after: `rm -f ${log(k)}; umount ${STAGE}`
    })
  } else {
    const native = method.startsWith('p2p-native')
    const base = method.replace(/\+(dht|nodes)$/, '')
    const mode = native ? base.replace(/^p2p-native-?/, '') || 'eager' : base.replace(/^p2p-/, '')
    const agent = native ? path.join(path.dirname(path.dirname(await realpath(opts.agent))), 'dist', NATIVE_AGENT_FILE) : opts.agent
    const serving = await serveSet(w, server, [CLUSTER, 'exec', '0'], opts['open-head'], method.endsWith('+dht'))
    stopServer = serving.stop
    let discovery = (_k: number) => serving.dht ? `--dht ${serving.dht}` : `--tracker ${serving.tracker}`
    if (method.endsWith('+nodes')) {
      const list = `/tmp/p2pb-nodes-${n}`
      const addresses = await Promise.all(Array.from({ length: n }, (_, i) => execa(CLUSTER, ['addr', String(i + 1)]).then((r) => `${r.stdout.trim()}:${NODE_PORT}`)))
      await writeFile(list, addresses.join('\n') + '\n')
      // The native agent takes the list as flags, as `p2prun mount --node-list` gives it them.
      const infoHash = Buffer.from((await readDescription(desc)).infoHash, 'hex')
      discovery = native
        ? (k) => nodeListFlags(nodeListOf(addresses, k - 1), infoHash, NODE_PORT).join(' ')
        : (k) => `--node-list ${list} --node-index ${k - 1}`
      stopServer = async () => { await serving.stop(); await rm(list, { force: true }) }
    }
    // The agent's first line is "mounted …" once the FS is up; EOF means it failed (its stderr says why).
    nodeScript = (k) => withSetMover(k, {
      // p2p-eager, -block, -file: the Node agent, whose process this reads (`p2prun mount` would hand
      // its mounts to a native child); a variable, not a flag, so builds from before it can run too.
      start: `${native ? '' : 'P2PRUN_AGENT=node '}${agent} mount ${desc} ${mnt} --mode ${mode} ${discovery(k)} --seeder ${serving.seeder} --store-dir /dev/shm --node-name n${k} --quiet${opts['agent-stats'] ? ` --stats ${opts['agent-stats']}/${method}-${n}-n${k}.json` : ''} > $f`,
      ready: 'mounted*',
      run: w.run(mnt)
    })
  }
  const before = await serverTxBytes()
  const ticksBefore = await serverTicks()
  try {
    const { times, starts, startCpus, cpus, programCpus } = await timeNodes(n, nodeScript)
    const programs = programCpus.filter(Boolean)
    const serverBytes = (await serverTxBytes()) - before
    let serverTicksUsed = 0
    for (const [pid, t] of await serverTicks()) serverTicksUsed += t - (ticksBefore.get(pid) ?? 0)
    return {
      nodes: n,
      rate: opts.rate,
      method,
      makespanS: Math.max(...times),
      medianS: median(times),
      nodeTimesS: times,
      nodeStartsS: starts,
      serverBytes,
      bytesPerNode: serverBytes / n,
      serverCpuS: serverTicksUsed / CLOCK_TICKS,
      ...(starts.length ? { agentStartS: median(starts.filter((s) => s !== undefined)) } : {}),
      ...(startCpus.length ? { agentStartCpuS: median(startCpus.filter((s) => s !== undefined)) } : {}),
      ...(cpus.length ? agentCpu(cpus.filter(Boolean), w.bytes) : {}),
      ...(programs.length
        ? { programCpuS: median(programs.map((c) => c.user + c.system)), programSysS: median(programs.map((c) => c.system)) }
        : {})
    }
  } finally {
    await stopServer()
  }
}

async function main (): Promise<void> {
  const nodes = opts.nodes.split(',').map(Number)
  const methods = opts.methods.split(',')
  await preflight(methods)
  rateBits(opts.rate)
  const w = await workload(Number(opts.libs), opts.driver)
  const rows: Row[] = []
  console.log(`set: ${opts.driver === 'hpcc' ? 'hpcc' : `${opts.libs} libraries`}, ${(w.bytes / 1e6).toFixed(1)} MB; link ${opts.rate} per node; driver ${opts.driver}; ` +
    `lower bound set/link = ${(w.bytes * 8 / rateBits(opts.rate)).toFixed(2)} s`)
  console.log('nodes  method           makespan  median  server MB  MB/node  server CPU  program CPU (sys)  agent start (CPU)  agent CPU, whole life (user/sys, max)  ctx vol/invol  MB/CPU-s')
  try {
    for (const n of nodes) {
      await cluster('up', String(n), opts.rate)
      for (const method of methods) {
        const row = await runMethod(method, n, w)
        rows.push(row)
        console.log(`${String(n).padStart(5)}  ${method.padEnd(15)} ${row.makespanS.toFixed(2).padStart(8)}s ${row.medianS.toFixed(2).padStart(6)}s ` +
          `${(row.serverBytes / 1e6).toFixed(1).padStart(9)} ${(row.bytesPerNode / 1e6).toFixed(1).padStart(8)} ` +
          `${row.serverCpuS?.toFixed(2).padStart(9)}s ${`${seconds(row.programCpuS)} (${seconds(row.programSysS)})`.padStart(17)} ${seconds(row.agentStartS).padStart(12)}${row.agentStartCpuS !== undefined ? ` (${seconds(row.agentStartCpuS)})` : '        '} ${seconds(row.agentCpuS).padStart(10)}` +
          (row.agentCpuS !== undefined
            ? ` (${seconds(row.agentUserS)}/${seconds(row.agentSysS)}, max ${seconds(row.agentCpuMaxS)})  ${row.agentVolCtx}/${row.agentInvolCtx}  ${row.agentMBPerCpuS?.toFixed(0)}`
            : ''))
      }
    }
  } finally {
    await cluster('down')
  }
  await mkdir(opts.out, { recursive: true })
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const file = path.join(opts.out, `run-${opts.rate}-${stamp}.json`)
  await writeFile(file, JSON.stringify({ date: new Date().toISOString(), agent: opts.agent, setBytes: w.bytes, libs: Number(opts.libs), driver: opts.driver, rate: opts.rate, cores: availableParallelism(), rows }, null, 2))
  console.log(`wrote ${file}`)
  const gnuplot = await execa('sh', ['-c', 'command -v gnuplot'], { reject: false })
  if (gnuplot.exitCode !== 0) console.log('no plots: gnuplot is not installed (hint: bash scripts/setup-system.sh --bench)')
  else for (const png of await plot(file)) console.log(`wrote ${png}`)
}

const seconds = (s: number | undefined) => s === undefined ? '' : `${s.toFixed(2)}s`

/**
 * A source tree's bin/p2prun runs its TypeScript sources when they are newer than its bundle (see
 * bin/p2prun): agents that start at twice the CPU, measured as if they were the build. Refused.
 */
async function checkBuilt (bin: string, native: boolean): Promise<void> {
  const root = path.dirname(path.dirname(await realpath(bin)))
  const stale = await execa('sh', ['-c', '[ ! -d launcher ] || { [ -f dist/cli.mjs ] && [ -z "$(find lib launcher package.json -newer dist/cli.mjs -print -quit)" ]; }'], { cwd: root, reject: false })
  if (stale.exitCode !== 0) throw new Error(`${bin} would run its sources, not its bundle: they changed since its last build (hint: run \`node scripts/build.ts\` in ${root})`)
  const agent = `dist/${NATIVE_AGENT_FILE}`
  const staleNative = await execa('sh', ['-c', `[ -x ${agent} ] && [ -z "$(find native -newer ${agent} -print -quit)" ]`], { cwd: root, reject: false })
  if (native && staleNative.exitCode !== 0) throw new Error(`${root}/${agent} is missing or older than its sources (hint: run \`node scripts/build.ts\` in ${root})`)
}

/** Everything the chosen methods need, checked before any namespace exists. */
async function preflight (methods: readonly string[]): Promise<void> {
  const hint = 'hint: run `bash scripts/setup-system.sh --bench` as root'
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (network and mount namespaces, tc, FUSE)')
  const needs = ['ip', 'tc', 'nsenter', 'unshare', 'fusermount']
  if (methods.includes('sshfs')) needs.push('sshfs', 'socat')
  if (methods.includes('stage-in')) needs.push('aria2c')
  if (opts.driver === 'python') needs.push('/usr/bin/python3')
  for (const cmd of needs) {
    const r = await execa('sh', ['-c', `command -v ${cmd}`], { reject: false })
    if (r.exitCode !== 0) throw new Error(`${cmd} is not installed (${hint})`)
  }
  if (methods.includes('sshfs') && (await execa('test', ['-x', '/usr/lib/openssh/sftp-server'], { reject: false })).exitCode !== 0) {
    throw new Error(`/usr/lib/openssh/sftp-server is missing (${hint})`)
  }
  for (const bin of new Set([P2PRUN, opts.agent])) await checkBuilt(bin, bin === opts.agent && methods.some((m) => m.startsWith('p2p-native')))
  const unknown = methods.filter((m) => !['local', 'sshfs', 'stage-in', 'p2p-block', 'p2p-file', 'p2p-eager', 'p2p-native', 'p2p-native-block', 'p2p-native-file'].includes(m.replace(/^(p2p-(block|file|eager))\+(dht|nodes)$/, '$1').replace(/^(p2p-native(-block|-file)?)\+nodes$/, '$1')))
  if (unknown.length) throw new Error(`unknown method ${unknown.join(', ')}: expected local, sshfs, stage-in, p2p-block, p2p-file, p2p-eager, p2p-native, p2p-native-block, p2p-native-file (a p2p method with +nodes: nodes find each other in the list of all nodes; but p2p-native… with +dht: in a DHT)`)
}

await main()
