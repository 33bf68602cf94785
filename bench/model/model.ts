// The launch model's command line: simulates one p2prun launch (eager mode, the Pynamic-like set)
// at each node count and prints makespan, tail latency, the head's bytes, CPU and description
// copies; writes bench/model/out/model-RATE-….json and, with gnuplot, two PNG plots.
//   node bench/model/model.ts --nodes 8,16,32,1000,4000,16000 --rate 10gbit
//   node bench/model/model.ts --nodes 8,16,32 --rate 100mbit --shared-cores 2 --mode bench   (as the emulated cluster)
// Options: --cores-per-node N (own cores: the agent on one, the program on a second if N ≥ 2),
// --shared-cores N (every node and the head on N cores in all), --mode launch|bench (launch: the
// description from peers first), --start-spread S (nodes start within S seconds), --discovery
// tracker|dht|nodes (dht: a DHT bootstrapped from the head, with --mode bench; nodes: peers from
// the job's node list, the description in the job spec whatever the mode), --agent native|node|auto
// (whose costs: params.ts's AGENT_COSTS; auto, as p2prun's `--agent auto`: native, but the Node agent
// with a DHT, which only it joins), --seed N.
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { HEAD_DIALERS } from '../../lib/swarm/node-list.ts'
import { simulateLaunch, type LaunchResult } from './launch.ts'
import { AGENT_COSTS, DEFAULTS, parseRate, type Params } from './params.ts'
import { librarySet } from './set.ts'
import { plotResults, type ModelRow } from './plot.ts'

const OUT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'out')

function row (r: LaunchResult, setBytes: number, cpuS: number): ModelRow {
  return {
    nodes: r.nodes,
    makespanS: r.makespan,
    medianS: r.median,
    p99S: r.p99,
    headUploadSets: r.headBytes / setBytes,
    headCpuS: r.headCpu,
    headDescCopies: r.headDescCopies,
    agentCpuS: r.agentCpuMedian,
    lastRegisteredS: r.lastRegistered,
    degreeMin: r.degreeMin,
    headConns: r.headConns,
    events: r.events,
    modelCpuS: cpuS
  }
}

function main (): void {
  const { values: o } = parseArgs({
    options: {
      nodes: { type: 'string', default: '8,16,32,1000,4000,16000' },
      rate: { type: 'string', default: '10gbit' },
      'cores-per-node': { type: 'string', default: String(DEFAULTS.coresPerNode) },
      'shared-cores': { type: 'string', default: '0' },
      mode: { type: 'string', default: DEFAULTS.mode },
      'start-spread': { type: 'string', default: String(DEFAULTS.startSpread) },
      discovery: { type: 'string', default: DEFAULTS.discovery },
      agent: { type: 'string', default: 'auto' },
      seed: { type: 'string', default: String(DEFAULTS.seed) }
    }
  })
  if (o.mode !== 'launch' && o.mode !== 'bench') usage(`--mode ${o.mode}: expected launch or bench`)
  if (o.discovery !== 'tracker' && o.discovery !== 'dht' && o.discovery !== 'nodes') usage(`--discovery ${o.discovery}: expected tracker, dht or nodes`)
  if (o.agent !== 'native' && o.agent !== 'node' && o.agent !== 'auto') usage(`--agent ${o.agent}: expected native, node or auto`)
  const agent = o.agent === 'auto' ? (o.discovery === 'dht' ? 'node' : 'native') : o.agent
  // The launch mode's nodes ask the tracker who holds the description: with a DHT, it is in the job spec.
  if (o.discovery === 'dht' && o.mode !== 'bench') usage('--discovery dht models the description in the job spec (hint: add --mode bench)')
  const set = librarySet()
  const base: Omit<Params, 'nodes'> = {
    ...DEFAULTS,
    ...AGENT_COSTS[agent],
    rate: parseRate(o.rate),
    coresPerNode: Number(o['cores-per-node']),
    sharedCores: Number(o['shared-cores']),
    mode: o.mode,
    startSpread: Number(o['start-spread']),
    discovery: o.discovery,
    seed: Number(o.seed)
  }
  const cpu = base.sharedCores > 0 ? `${base.sharedCores} cores shared by all` : `${base.coresPerNode} core(s) per node`
  // With a node list the launcher's fan-out carries the description: no node fetches it, in either mode.
  const mode = o.discovery === 'nodes' && o.mode === 'launch' ? 'launch mode (the description in the job spec)' : `${o.mode} mode`
  const discovery = o.discovery === 'nodes' ? `nodes (the job's node list; up to ${HEAD_DIALERS} nodes dial the head at start)` : o.discovery
  console.log(`set ${(set.bytes / 1e6).toFixed(1)} MB in ${set.pieceCount} pieces of ${set.pieceLength / 1024} KiB; link ${o.rate}; ${cpu}; ${mode}; discovery: ${discovery}; the ${agent} agent`)
  console.log('nodes  makespan  median     p99  head up (x set)  head CPU  head desc copies  agent CPU  last registered  min degree  model CPU')
  const rows: ModelRow[] = []
  for (const nodes of o.nodes.split(',').map(Number)) {
    const before = process.cpuUsage()
    const r = simulateLaunch({ ...base, nodes }, set)
    const used = process.cpuUsage(before)
    const x = row(r, set.bytes, (used.user + used.system) / 1e6)
    rows.push(x)
    console.log(`${String(nodes).padStart(5)} ${x.makespanS.toFixed(2).padStart(8)}s ${x.medianS.toFixed(2).padStart(6)}s ${x.p99S.toFixed(2).padStart(6)}s ` +
      `${x.headUploadSets.toFixed(2).padStart(16)} ${x.headCpuS.toFixed(2).padStart(8)}s ${String(x.headDescCopies).padStart(17)} ${x.agentCpuS.toFixed(2).padStart(9)}s ` +
      `${x.lastRegisteredS.toFixed(2).padStart(15)}s ${String(x.degreeMin).padStart(11)} ${x.modelCpuS.toFixed(1).padStart(9)}s`)
  }
  mkdirSync(OUT, { recursive: true })
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const file = path.join(OUT, `model-${o.rate}-${stamp}.json`)
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), agent, setBytes: set.bytes, pieces: set.pieceCount, rate: o.rate, params: base, rows }, null, 2))
  console.log(`wrote ${file}`)
  if (!hasGnuplot()) console.log('no plots: gnuplot is not on PATH')
  else for (const png of plotResults(file, o.rate, rows)) console.log(`wrote ${png}`)
}

function usage (message: string): never {
  console.error(`bench/model/model.ts: ${message}`)
  process.exit(2)
}

function hasGnuplot (): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v gnuplot'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

main()
