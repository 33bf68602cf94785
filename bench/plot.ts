// Draws a results file of bench/run.ts with gnuplot: makespan against N per method (with the
// transfer lower bound, node-local start + set size / link rate, and each method's CPU floor on the
// shared cores) and server bytes against N (with the set size and the issue's 2x target). Writes
// RESULT-makespan.png and RESULT-server.png.
// Usage: node bench/plot.ts bench/results/run-….json
import { execa } from 'execa'
import { readFile } from 'node:fs/promises'

export interface ResultRow {
  nodes: number
  rate: string
  method: string
  makespanS: number
  serverBytes: number
  agentCpuS?: number
  programCpuS?: number
}
export interface Results {
  setBytes: number
  rate: string
  driver: string
  /** CPUs of the machine every emulated node shares. */
  cores?: number
  rows: ResultRow[]
}

export function rateBits (rate: string): number {
  const m = rate.match(/^(\d+(?:\.\d+)?)([kmg]?)bit$/)
  if (!m) throw new Error(`rate ${rate}: expected e.g. 100mbit, 1gbit, 10gbit`)
  return Number(m[1]) * ({ k: 1e3, m: 1e6, g: 1e9, '': 1 } as Record<string, number>)[m[2] ?? '']!
}

/** The methods in the order their lines are drawn: the i-th is gnuplot's line type i + 1 (its colour). */
const methodsOf = (r: Results) => [...new Set(r.rows.map((x) => x.method))]

/** gnuplot's inline data blocks: one per method, "N value" lines. */
function dataBlocks (r: Results, value: (row: ResultRow) => number): { blocks: string, plots: string[] } {
  const methods = methodsOf(r)
  let blocks = ''
  const plots: string[] = []
  methods.forEach((m, i) => {
    const rows = r.rows.filter((x) => x.method === m).sort((a, b) => a.nodes - b.nodes)
    blocks += `$d${i} << EOD\n${rows.map((x) => `${x.nodes} ${value(x)}`).join('\n')}\nEOD\n`
    plots.push(`$d${i} using 1:2 with linespoints lw 2 pt ${i + 5} title '${m}'`)
  })
  return { blocks, plots }
}

export async function plot (file: string): Promise<string[]> {
  const r = JSON.parse(await readFile(file, 'utf8')) as Results
  const base = file.replace(/\.json$/, '')
  const bound = r.setBytes * 8 / rateBits(r.rate)
  const local = new Map(r.rows.filter((x) => x.method === 'local').map((x) => [x.nodes, x.makespanS]))
  const nodes = [...new Set(r.rows.map((x) => x.nodes))].sort((a, b) => a - b)
  const boundBlock = `$bound << EOD\n${nodes.map((n) => `${n} ${(local.get(n) ?? 0) + bound}`).join('\n')}\nEOD\n`
  const head = `set terminal pngcairo size 900,560 font ',11'\nset key top left\nset grid\nset xlabel 'nodes'\n` +
    `set logscale x 2\nset xtics (${nodes.join(', ')})\n`
  const mk = dataBlocks(r, (x) => x.makespanS)
  // All nodes share the machine's cores: N agents' and programs' CPU time spread over them bounds
  // the makespan. A floor per method whose agents' CPU was read (the p2p agents, the stage-in client).
  methodsOf(r).forEach((m, i) => {
    const rows = r.rows.filter((x) => x.method === m && x.agentCpuS !== undefined).sort((a, b) => a.nodes - b.nodes)
    if (!r.cores || !rows.length) return
    mk.blocks += `$cpu${i} << EOD\n${rows.map((x) => `${x.nodes} ${x.nodes * ((x.agentCpuS ?? 0) + (x.programCpuS ?? 0)) / (r.cores ?? 1)}`).join('\n')}\nEOD\n`
    mk.plots.push(`$cpu${i} using 1:2 with lines dt 4 lw 2 lc ${i + 1} title '${m}: N x (agent + program CPU) / ${r.cores} cores'`)
  })
  const sv = dataBlocks(r, (x) => x.serverBytes / 1e6)
  const setMB = r.setBytes / 1e6
  const script = head + mk.blocks + boundBlock +
    `set output '${base}-makespan.png'\nset ylabel 'launch makespan (s)'\n` +
    `set title 'Makespan, ${(setMB).toFixed(1)} MB set, ${r.rate} per node, ${r.driver}'\n` +
    `plot ${[...mk.plots, "$bound using 1:2 with lines dt 2 lw 2 lc rgb 'black' title 'local start + set/link'"].join(', ')}\n` +
    sv.blocks +
    `set output '${base}-server.png'\nset ylabel 'server bytes sent (MB)'\nset title 'Server upload, ${setMB.toFixed(1)} MB set'\n` +
    `plot ${[...sv.plots, `${setMB} with lines dt 2 lw 2 lc rgb 'black' title 'set size', ${2 * setMB} with lines dt 3 lw 2 lc rgb 'gray' title '2x set'`].join(', ')}\n`
  await execa('gnuplot', [], { input: script })
  return [`${base}-makespan.png`, `${base}-server.png`]
}

if (import.meta.main) {
  const file = process.argv[2]
  if (!file) throw new Error('usage: node bench/plot.ts RESULTS.json')
  for (const png of await plot(file)) console.log(`wrote ${png}`)
}
