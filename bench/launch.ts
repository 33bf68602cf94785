// The Pynamic-like driver launched as users launch it: `p2prun -n N` with real `mpirun` (one rank
// per emulated node, bench/rsh-agent.sh standing in for ssh), once naming the library directory
// (`--libs`) and once with nothing but the program (its load closure, found by p2prun: the
// libraries and the driver itself, which every rank then runs from the mount). The two take turns.
// `--driver python`: Python importing the 200 libraries as extension modules; named, the directory
// is `--libs` and PYTHONPATH points into the mount by hand; zero-configuration, p2prun serves the
// PYTHONPATH entries it finds outside the system and points PYTHONPATH there itself.
// Measured: the whole launch, until `p2prun` returns (every rank loaded its 200 libraries and
// exited; the head and agents are gone), and the bytes the server node sent.
// Usage: npm run bench:launch -- [--nodes 8] [--rate 100mbit] [--rounds 3] [--driver driver|python]
import { execa } from 'execa'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { CLUSTER, mpiAcrossNodes, serverTxBytes, writeHostfile } from './cluster.ts'
import { generatedDir, P2PRUN, ROOT, workload } from './workload.ts'

const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string', default: '8' },
    rate: { type: 'string', default: '100mbit' },
    rounds: { type: 'string', default: '3' },
    driver: { type: 'string', default: 'driver' }
  }
})
const LIBS = 200
const n = Number(opts.nodes)
const rounds = Number(opts.rounds)
if (!Number.isInteger(n) || n < 2) throw new Error(`--nodes ${opts.nodes}: expected one node count of at least 2 (run once per count)`)

/** One launch from the server node; what it printed is kept for a failure. */
async function launch (args: string[], env: Record<string, string>): Promise<{ seconds: number, serverMB: number }> {
  const before = await serverTxBytes()
  const t0 = performance.now()
  const r = await execa('nsenter', ['--net=/run/netns/p2pb-s0', P2PRUN, '-n', String(n), '--launcher', 'openmpi', ...args],
    { env: { ...process.env, ...env }, reject: false, stdin: 'ignore' })
  const seconds = (performance.now() - t0) / 1000
  if (r.exitCode !== 0) throw new Error(`the launch failed (exit ${r.exitCode}): ${String(r.stderr).slice(-1500)}`)
  return { seconds, serverMB: ((await serverTxBytes()) - before) / 1e6 }
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
  try {
    const mpi = mpiAcrossNodes(hostfile)
    const results: Record<string, { seconds: number, serverMB: number }[]> = { explicit: [], zero: [] }
    for (let i = 0; i < rounds; i++) {
      results.explicit?.push(await launch([...mpi, '--quiet', ...ways.explicit.args], ways.explicit.env))
      // As the user has it: the libraries on LD_LIBRARY_PATH (PYTHONPATH) where the driver was built; nothing else.
      results.zero?.push(await launch([...mpi, '--quiet', ...ways.zero.args], ways.zero.env))
    }
    console.log(`Pynamic-like ${opts.driver}, ${n} ranks on ${n} nodes, ${opts.rate} per node, ${(w.bytes / 1e6).toFixed(1)} MB of libraries, ${rounds} rounds taking turns:`)
    for (const [name, rows] of Object.entries(results)) {
      const label = name === 'explicit' ? `p2prun -n ${n} --libs DIR ${opts.driver}` : `p2prun -n ${n} ${opts.driver} (no --libs)`
      console.log(`  ${label.padEnd(34)} ${rows.map((r) => `${r.seconds.toFixed(2)} s`).join(', ')}; server sent ${rows.map((r) => r.serverMB.toFixed(1)).join(', ')} MB`)
    }
  } finally {
    await execa(CLUSTER, ['down'], { stdio: 'inherit' })
    await rm(hostfile, { force: true })
  }
}

await main()
