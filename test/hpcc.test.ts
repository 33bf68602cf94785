// A real MPI application: Debian's HPCC on real Open MPI, launched through p2prun, with its MPI
// libraries and Open MPI's plugins loaded from the mount (examples/hpcc).
import { execFile } from 'node:child_process'
import { copyFile, mkdir, readFile, readdir } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { ROOT } from './helpers/cli.ts'
import { launch, launchDirs, mountsUnder } from './helpers/launch.ts'
import { scratch } from './helpers/scratch.ts'

const run = promisify(execFile)
const EXAMPLE = path.join(ROOT, 'examples/hpcc')

t.test('HPCC on 2 Open MPI ranks loads libmpi and its MCA plugins from the mount and completes', async (t) => {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const staged = path.join(s.dir, 'hpcc')
  await run('bash', [path.join(EXAMPLE, 'collect.sh'), staged])
  await copyFile(path.join(EXAMPLE, 'hpccinf.txt'), path.join(s.dir, 'hpccinf.txt'))
  // The loader reports every object it initialises, with the path it was found at: each process
  // to a file of its own (LD_DEBUG_OUTPUT.PID), as the ranks' stderr, forwarded by mpirun, may
  // interleave within a line.
  const traces = path.join(s.dir, 'ld-debug')
  await mkdir(traces)
  const r = await launch(s, dirs, ['-n', '2', '--launcher', 'openmpi', '--allow-run-as-root', '--oversubscribe',
    '--libs', path.join(staged, 'lib'), '--libs', path.join(staged, 'openmpi'), '--libs', path.join(staged, 'pmix'),
    path.join(EXAMPLE, 'rank.sh')], { LD_DEBUG: 'files', LD_DEBUG_OUTPUT: path.join(traces, 'ld') })
  t.equal(r.exitCode, 0, 'p2prun exits 0', { stderr: String(r.stderr).slice(-2000) })
  // LD_DEBUG lines are "PID: message".
  const debug: { pid: string, text: string }[] = []
  for (const name of await readdir(traces)) {
    const text = await readFile(path.join(traces, name), 'utf8')
    for (const m of text.matchAll(/^\s*(\d+):\s+(.*)$/gm)) debug.push({ pid: m[1] as string, text: m[2] as string })
  }
  // Only the ranks load from the mount; mpirun itself runs on the launch host with the system's.
  const ranks = new Set(debug.filter((d) => d.text === 'initialize program: /usr/bin/hpcc').map((d) => d.pid))
  t.equal(ranks.size, 2, 'two HPCC ranks ran')
  const inits = debug.filter((d) => ranks.has(d.pid)).map((d) => d.text.match(/^calling init: (\S+)/)?.[1]).filter((p) => p !== undefined)
  const fromMount = inits.filter((p) => p.startsWith(`${dirs.mounts}/`))
  t.ok(fromMount.some((p) => p.endsWith('/lib/libmpi.so.40')), 'libmpi came from the mount')
  const plugins = fromMount.filter((p) => /\/openmpi\/mca_\w+\.so$/.test(p))
  t.ok(plugins.length >= 10, `${plugins.length} Open MPI plugins came from the mount`)
  t.notOk(inits.some((p) => p.includes('/openmpi/lib/openmpi3/')), 'no rank loaded a plugin from the system plugin directory')
  t.match(await readFile(path.join(s.dir, 'hpccoutf.txt'), 'utf8'), /End of HPC Challenge tests/, 'HPCC completed its report')
  t.same(await mountsUnder(s.dir), [], 'no mount left')
  t.same(await readdir(dirs.run).catch(() => []), [], 'no agent state left')
})
