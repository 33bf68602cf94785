// The model's plots, with gnuplot (as bench/plot.ts draws the bench's): makespan, median and p99
// node finish against N; the head's upload (in sets) and CPU against N, with the 2x line.
import { execFileSync } from 'node:child_process'

/** One node count's results, as model.ts prints and this plots them. */
export interface ModelRow {
  readonly nodes: number
  readonly makespanS: number
  readonly medianS: number
  readonly p99S: number
  readonly headUploadSets: number
  readonly headCpuS: number
  readonly headDescCopies: number
  readonly agentCpuS: number
  readonly lastRegisteredS: number
  readonly degreeMin: number
  readonly headConns: number
  readonly events: number
  /** CPU seconds this program took to simulate the row. */
  readonly modelCpuS: number
}

export function plotResults (file: string, rate: string, rows: readonly ModelRow[]): string[] {
  const base = file.replace(/\.json$/, '')
  const data = (f: (r: ModelRow) => number) => rows.map((r) => `${r.nodes} ${f(r)}`).join('\n')
  const head = "set terminal pngcairo size 900,560 font ',11'\nset key top left\nset grid\nset xlabel 'nodes'\nset logscale x 2\n" +
    `set xtics (${rows.map((r) => r.nodes).join(', ')})\n`
  const script = head +
    `$mk << EOD\n${data((r) => r.makespanS)}\nEOD\n$md << EOD\n${data((r) => r.medianS)}\nEOD\n$p99 << EOD\n${data((r) => r.p99S)}\nEOD\n` +
    `$up << EOD\n${data((r) => r.headUploadSets)}\nEOD\n$cpu << EOD\n${data((r) => r.headCpuS)}\nEOD\n` +
    `set output '${base}-makespan.png'\nset ylabel 'seconds from the common start'\nset title 'Model: node finish, ${rate} links'\n` +
    "plot $mk using 1:2 with linespoints lw 2 pt 5 title 'makespan', $p99 using 1:2 with linespoints lw 2 pt 7 title 'p99', $md using 1:2 with linespoints lw 2 pt 9 title 'median'\n" +
    `set output '${base}-head.png'\nset ylabel 'head upload (sets)'\nset y2label 'head CPU (s)'\nset y2tics\nset ytics nomirror\nset yrange [0:*]\nset y2range [0:*]\n` +
    `set title 'Model: the head, ${rate} links'\n` +
    "plot $up using 1:2 with linespoints lw 2 pt 5 title 'head upload (x set)', 2 with lines dt 2 lw 2 lc rgb 'gray' title '2x set', $cpu using 1:2 axes x1y2 with linespoints lw 2 pt 7 title 'head CPU (s)'\n"
  execFileSync('gnuplot', [], { input: script })
  return [`${base}-makespan.png`, `${base}-head.png`]
}
