// The model against the emulated cluster's measurements, per node agent: the native agent's rows
// (bench/README.md, 2026-12-05 10:24, p2p-native) or the Node agent's (2026-12-03, 00:55–01:03: the
// calibration matrix of e59b234, p2p-eager); the job secret on, medians of the runs of each row.
// The model runs as the bench does: 2 cores shared by every agent, program and the head; agents
// given the description file.
//   node bench/model/calibrate.ts [--agent native|node]         model vs measured with params.ts's AGENT_COSTS
//   node bench/model/calibrate.ts [--agent native|node] --fit   fit trickleCpu, pieceRecvCpu and emulationCpuPerPiece again
import { parseArgs } from 'node:util'
import { simulateLaunch } from './launch.ts'
import { AGENT_COSTS, DEFAULTS, parseRate, type AgentKind, type Params } from './params.ts'
import { librarySet } from './set.ts'

interface Row {
  readonly nodes: number
  readonly rate: string
  readonly makespan: number
  readonly agentCpu: number
  readonly serverMB: number
  /** Fitted to, or only compared with. */
  readonly fit: boolean
}

const { values: opts } = parseArgs({ options: { fit: { type: 'boolean', default: false }, agent: { type: 'string', default: 'native' } } })
if (opts.agent !== 'native' && opts.agent !== 'node') {
  console.error(`bench/model/calibrate.ts: --agent ${opts.agent}: expected native or node`)
  process.exit(2)
}
const agent: AgentKind = opts.agent

/** bench/README.md, "Results on the new 2-core VM (2026-12-03, 00:55–01:03)": medians of three runs per row. */
const NODE_ROWS: readonly Row[] = [
  { nodes: 8, rate: '100mbit', makespan: 6.78, agentCpu: 1.11, serverMB: 48.7, fit: true },
  { nodes: 16, rate: '100mbit', makespan: 11.17, agentCpu: 1.07, serverMB: 48.7, fit: true },
  { nodes: 32, rate: '100mbit', makespan: 23.10, agentCpu: 1.09, serverMB: 48.8, fit: true },
  { nodes: 32, rate: '1gbit', makespan: 20.47, agentCpu: 0.98, serverMB: 48.8, fit: true },
  { nodes: 8, rate: '1gbit', makespan: 4.70, agentCpu: 0.86, serverMB: 48.7, fit: true },
  { nodes: 64, rate: '100mbit', makespan: 52.61, agentCpu: 1.27, serverMB: 49.3, fit: false }
]

/**
 * bench/README.md, 2026-12-05 10:24–10:27 (73dae66: FUSE passthrough, the bench's clock without its
 * own forks; the runs: bench/model/README.md, "The native agent's fit"): medians of three runs per
 * row at 100 Mbit/s, the mean of two at 1 Gbit/s and at 64 nodes.
 */
const NATIVE_ROWS: readonly Row[] = [
  { nodes: 8, rate: '100mbit', makespan: 4.88, agentCpu: 0.20, serverMB: 48.7, fit: true },
  { nodes: 16, rate: '100mbit', makespan: 5.73, agentCpu: 0.26, serverMB: 48.8, fit: true },
  { nodes: 32, rate: '100mbit', makespan: 7.82, agentCpu: 0.30, serverMB: 48.9, fit: true },
  { nodes: 32, rate: '1gbit', makespan: 5.79, agentCpu: 0.21, serverMB: 48.9, fit: true },
  { nodes: 8, rate: '1gbit', makespan: 1.38, agentCpu: 0.16, serverMB: 48.7, fit: true },
  { nodes: 64, rate: '100mbit', makespan: 17.55, agentCpu: 0.34, serverMB: 51.1, fit: false }
]
const ROWS = agent === 'native' ? NATIVE_ROWS : NODE_ROWS
/** Seeds per row: the model's own spread (random peers and background orders) is averaged out. */
const SEEDS = 3
const set = librarySet()

interface Modeled { makespan: number, agentCpu: number, headMB: number }

function model (row: Row, over: Partial<Params>): Modeled {
  let makespan = 0
  let agentCpu = 0
  let headMB = 0
  for (let seed = 1; seed <= SEEDS; seed++) {
    const r = simulateLaunch({ ...DEFAULTS, ...AGENT_COSTS[agent], ...over, nodes: row.nodes, rate: parseRate(row.rate), sharedCores: 2, mode: 'bench', seed }, set)
    makespan += r.makespan / SEEDS
    agentCpu += r.agentCpuMedian / SEEDS
    headMB += r.headBytes / 1e6 / SEEDS
  }
  return { makespan, agentCpu, headMB }
}

const fitted = ROWS.filter((r) => r.fit)

/**
 * trickleCpu so that the model's agents spend what the measured ones did more at 100 Mbit/s than
 * at 1 Gbit/s for the same bytes (the 8-node rows): agent CPU is linear in it, two runs give it.
 */
function fitTrickle (over: Partial<Params>): number {
  const [slow, fast] = [ROWS.find((r) => r.nodes === 8 && r.rate === '100mbit'), ROWS.find((r) => r.nodes === 8 && r.rate === '1gbit')] as [Row, Row]
  const gap = (trickleCpu: number) => model(slow, { ...over, trickleCpu }).agentCpu - model(fast, { ...over, trickleCpu }).agentCpu
  const probe = 0.1
  const [g0, g1] = [gap(0), gap(probe)]
  return Math.max(0, probe * (slow.agentCpu - fast.agentCpu - g0) / (g1 - g0))
}

/** pieceRecvCpu (pieceSendCpu half of it) so that the mean whole-life agent CPU matches. */
function fitPieceCpu (over: Partial<Params>): number {
  const target = fitted.reduce((a, r) => a + r.agentCpu, 0) / fitted.length
  let lo = 0.1e-3
  let hi = 3e-3
  for (let i = 0; i < 14; i++) {
    const mid = (lo + hi) / 2
    const got = fitted.reduce((a, r) => a + model(r, { ...over, pieceRecvCpu: mid, pieceSendCpu: mid / 2 }).agentCpu, 0) / fitted.length
    if (got < target) lo = mid
    else hi = mid
  }
  return (lo + hi) / 2
}

/** emulationCpuPerPiece minimizing the squared relative makespan errors (golden-section search). */
function fitEmulation (over: Partial<Params>): number {
  const cost = (e: number) => fitted.reduce((a, r) => a + ((model(r, { ...over, emulationCpuPerPiece: e }).makespan - r.makespan) / r.makespan) ** 2, 0)
  let a = 0
  let b = 1e-3
  const g = (Math.sqrt(5) - 1) / 2
  for (let i = 0; i < 16; i++) {
    const c = b - g * (b - a)
    const d = a + g * (b - a)
    if (cost(c) < cost(d)) b = d
    else a = c
  }
  return (a + b) / 2
}

const pct = (model: number, measured: number) => `${((model - measured) / measured * 100).toFixed(1).padStart(6)} %`

function table (over: Partial<Params> = {}): string {
  const lines = ['| nodes | rate | makespan model / measured | error | agent CPU model / measured | error | head MB model / measured | used for |', '|---|---|---|---|---|---|---|---|']
  for (const row of ROWS) {
    const m = model(row, over)
    lines.push(`| ${row.nodes} | ${row.rate} | ${m.makespan.toFixed(2)} / ${row.makespan.toFixed(2)} s | ${pct(m.makespan, row.makespan)} | ` +
      `${m.agentCpu.toFixed(2)} / ${row.agentCpu.toFixed(2)} s | ${pct(m.agentCpu, row.agentCpu)} | ${m.headMB.toFixed(1)} / ${row.serverMB.toFixed(1)} | ${row.fit ? 'fit' : 'check'} |`)
  }
  return lines.join('\n')
}

if (import.meta.main) {
  let over: Partial<Params> = {}
  if (opts.fit) {
    // Agent CPU first (it barely depends on the emulation's own CPU): its part that depends on the
    // link rate, then the rest; then the makespans.
    const trickleCpu = fitTrickle({})
    const pieceRecvCpu = fitPieceCpu({ trickleCpu })
    over = { trickleCpu, pieceRecvCpu, pieceSendCpu: pieceRecvCpu / 2 }
    const emulationCpuPerPiece = fitEmulation(over)
    over = { ...over, emulationCpuPerPiece }
    console.log(`fitted: trickleCpu ${trickleCpu.toFixed(4)}, pieceRecvCpu ${(pieceRecvCpu * 1e3).toFixed(3)} ms, pieceSendCpu ${(pieceRecvCpu / 2 * 1e3).toFixed(3)} ms, ` +
      `emulationCpuPerPiece ${(emulationCpuPerPiece * 1e3).toFixed(3)} ms (put them in params.ts's AGENT_COSTS.${agent})`)
  }
  console.log(table(over))
}
