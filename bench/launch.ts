// The Pynamic-like driver launched as users launch it: `p2prun -n N` with real `mpirun` (one rank
// per emulated node, bench/rsh-agent.sh standing in for ssh), once naming the library directory
// (`--libs`) and once with nothing but the program (its load closure, found by p2prun: the
// libraries and the driver itself, which every rank then runs from the mount). The two take turns.
// `--driver python`: Python importing the 200 libraries as extension modules; named, the directory
// is `--libs` and PYTHONPATH points into the mount by hand; zero-configuration, p2prun serves the
// PYTHONPATH entries it finds outside the system and points PYTHONPATH there itself.
// `--warm`: two more ways take turns with them, `--libs DIR` with node agents that linger
// (P2PRUN_AGENT_LINGER), each launch handed to the agents of the one before (a launch first, not
// counted, starts them; they are stopped by PID at the end): a new set each time (DIR plus a
// directory with one small file that differs, so the set is fetched as for a cold launch), then
// that same set again (the agents kept its store: what a job script's second run of a program gets).
// Measured: the whole launch, until `p2prun` returns (every rank loaded its 200 libraries and
// exited; the head and agents are gone, or lingering), the bytes the server node sent, and what
// each node's agent spent on the launch (its own count, logged at the launch's end: from its
// process's start, or from the hand-off for a lingering agent), median and largest over the nodes,
// and of it until the mount was ready.
// `--agents native,node`: every way once per agent (P2PRUN_AGENT) in each round, their order
// reversed every other round; the agents lingering from one are stopped before the other's turn.
// Usage: npm run bench:launch -- [--nodes 8] [--rate 100mbit] [--rounds 3] [--driver driver|python] [--warm] [--agents auto]
import { execa } from 'execa'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { CLUSTER, mpiAcrossNodes, serverTxBytes, writeHostfile } from './cluster.ts'
import { readWarmAgentRecord, warmAgentFiles } from '../lib/session/node-state.ts'
import { terminate } from '../lib/session/process.ts'
import { generatedDir, median, P2PRUN, ROOT, workload } from './workload.ts'

const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string', default: '8' },
    rate: { type: 'string', default: '100mbit' },
    rounds: { type: 'string', default: '3' },
    driver: { type: 'string', default: 'driver' },
    warm: { type: 'boolean', default: false },
    agents: { type: 'string', default: 'auto' }
  }
})
/** The launches' run directory (shared by the emulated nodes, which keep their node states apart by name). */
const RUN_DIR = path.join(ROOT, 'bench/work/run')
const LINGER_S = '600'
const LIBS = 200
const n = Number(opts.nodes)
const rounds = Number(opts.rounds)
if (!Number.isInteger(n) || n < 2) throw new Error(`--nodes ${opts.nodes}: expected one node count of at least 2 (run once per count)`)

interface Launched { seconds: number, serverMB: number, agentCpuS: number[], agentUserS: number[], agentSysS: number[], agentStartCpuS: number[] }

/** One launch from the server node; what it printed is kept for a failure. */
async function launch (args: string[], env: Record<string, string>): Promise<Launched> {
  const logs = path.join(RUN_DIR, 'logs')
  await rm(logs, { recursive: true, force: true })
  const before = await serverTxBytes()
  const t0 = performance.now()
  // P2PRUN_DEBUG=1: each agent keeps its log, whose last counters say what the launch cost it.
  const r = await execa('nsenter', ['--net=/run/netns/p2pb-s0', P2PRUN, '-n', String(n), '--launcher', 'openmpi', ...args],
    { env: { ...process.env, P2PRUN_RUN_DIR: RUN_DIR, P2PRUN_DEBUG: '1', ...env }, reject: false, stdin: 'ignore' })
  const seconds = (performance.now() - t0) / 1000
  if (r.exitCode !== 0) throw new Error(`the launch failed (exit ${r.exitCode}): ${String(r.stderr).slice(-1500)}`)
  const agentCpuS: number[] = []
  const agentUserS: number[] = []
  const agentSysS: number[] = []
  const agentStartCpuS: number[] = []
  for (const name of await readdir(logs).catch(() => [])) {
    const stats = [...(await readFile(path.join(logs, name), 'utf8')).matchAll(/ stats (\{.*\})$/gm)].at(-1)?.[1]
    type Cpu = { user: number, system: number }
    const { cpu, startCpu } = stats ? JSON.parse(stats) as { cpu?: Cpu, startCpu?: Cpu } : {}
    if (cpu) {
      agentCpuS.push(cpu.user + cpu.system)
      agentUserS.push(cpu.user)
      agentSysS.push(cpu.system)
    }
    if (startCpu) agentStartCpuS.push(startCpu.user + startCpu.system)
  }
  if (agentCpuS.length !== n) throw new Error(`${agentCpuS.length} of ${n} agents logged their counters in ${logs}`)
  return { seconds, serverMB: ((await serverTxBytes()) - before) / 1e6, agentCpuS, agentUserS, agentSysS, agentStartCpuS }
}

/** Stops the agents lingering for the nodes (n1…nN: by the PIDs their records give), and waits until they are gone. */
async function stopLingering (): Promise<void> {
  for (let k = 1; k <= n; k++) {
    const record = await readWarmAgentRecord(warmAgentFiles(RUN_DIR, `n${k}`).record)
    if (record) await terminate(record.pid, 15_000)
  }
}

async function main (): Promise<void> {
  if (opts.driver !== 'driver' && opts.driver !== 'python') throw new Error(`--driver ${opts.driver}: expected driver or python`)
  const w = await workload(LIBS, 'driver')
  const lib = path.join(w.set, 'lib')
  const gen = generatedDir(LIBS)
  const python = ['/usr/bin/python3', '-S', path.join(gen, 'driver.py')]
  // Each way: p2prun's arguments after the launcher's, and the environment it is started with.
  const ways: Record<'explicit' | 'zero', { args: string[], env: Record<string, string> }> = opts.driver === 'driver'
    ? { explicit: { args: ['--libs', lib, path.join(gen, 'driver')], env: {} }, zero: { args: [path.join(gen, 'driver')], env: { LD_LIBRARY_PATH: lib } } }
    : {
        explicit: { args: ['--libs', lib, 'sh', '-c', `PYTHONPATH=\${LD_LIBRARY_PATH%%:*} exec ${python.join(' ')}`], env: {} },
        zero: { args: python, env: { PYTHONPATH: lib } }
      }
  await execa(CLUSTER, ['up', String(n), opts.rate], { stdio: 'inherit' })
  const hostfile = await writeHostfile(path.join(ROOT, 'bench/work/hosts'), n)
  let sets = 0 // the new sets made (bench/work/round-K), removed at the end
  try {
    const mpi = mpiAcrossNodes(hostfile)
    const agents = opts.agents.split(',')
    const results = new Map<string, Launched[]>()
    const record = (agent: string, way: string, r: Launched) => {
      const key = `${agents.length > 1 ? `${agent}: ` : ''}${way}`
      results.set(key, [...results.get(key) ?? [], r])
    }
    const newSet = async () => {
      const dir = path.join(ROOT, `bench/work/round-${sets++}`)
      await mkdir(dir, { recursive: true })
      await writeFile(path.join(dir, 'round'), `${sets}\n`)
      const [libsFlag, libDir, ...rest] = ways.explicit.args // --libs DIR first on the library path, as in the explicit way
      return [libsFlag as string, libDir as string, '--libs', dir, ...rest]
    }
    let lingering: string | undefined
    for (let i = 0; i < rounds; i++) {
      for (const agent of i % 2 ? [...agents].reverse() : agents) {
        const env = { P2PRUN_AGENT: agent }
        record(agent, 'explicit', await launch([...mpi, '--quiet', ...ways.explicit.args], { ...ways.explicit.env, ...env }))
        // As the user has it: the libraries on LD_LIBRARY_PATH (PYTHONPATH) where the driver was built; nothing else.
        record(agent, 'zero', await launch([...mpi, '--quiet', ...ways.zero.args], { ...ways.zero.env, ...env }))
        if (!opts.warm) continue
        const warm = { P2PRUN_AGENT_LINGER: LINGER_S, ...ways.explicit.env, ...env }
        if (lingering !== agent) {
          // This agent's own lingering agents, started by a launch not counted.
          await stopLingering()
          await launch([...mpi, '--quiet', ...await newSet()], warm)
          lingering = agent
        }
        const set = await newSet()
        record(agent, 'warm', await launch([...mpi, '--quiet', ...set], warm))
        record(agent, 'kept', await launch([...mpi, '--quiet', ...set], warm))
      }
    }
    console.log(`Pynamic-like ${opts.driver}, ${n} ranks on ${n} nodes, ${opts.rate} per node, ${(w.bytes / 1e6).toFixed(1)} MB of libraries, ${rounds} rounds taking turns:`)
    const labels: Record<string, string> = { explicit: `p2prun -n ${n} --libs DIR ${opts.driver}`, zero: `p2prun -n ${n} ${opts.driver} (no --libs)`, warm: 'agents lingering, a new set', kept: 'agents lingering, the same set again' }
    for (const [name, rows] of results) {
      const label = name.replace(/\w+$/, (way) => labels[way] ?? way)
      console.log(`  ${label.padEnd(agents.length > 1 ? 42 : 34)} ${rows.map((r) => `${r.seconds.toFixed(2)} s`).join(', ')}; server sent ${rows.map((r) => r.serverMB.toFixed(1)).join(', ')} MB; ` +
        `agent CPU-s per node (median/max, user+sys) ${rows.map((r) => `${median(r.agentCpuS).toFixed(2)}/${Math.max(...r.agentCpuS).toFixed(2)} ` +
          `(${median(r.agentUserS).toFixed(2)}+${median(r.agentSysS).toFixed(2)})`).join(', ')}, ` +
        `of it until mounted (median) ${rows.map((r) => median(r.agentStartCpuS).toFixed(3)).join(', ')}`)
    }
  } finally {
    await stopLingering()
    for (let i = 0; i < sets; i++) await rm(path.join(ROOT, `bench/work/round-${i}`), { recursive: true, force: true })
    await execa(CLUSTER, ['down'], { stdio: 'inherit' })
    await rm(hostfile, { force: true })
  }
}

await main()
