// `p2prun -n N ./app` through p2prun's local launcher, real Open MPI 4.1 and real MPICH 4.0.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { connect, createServer, type AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { CLI, ROOT } from './helpers/cli.ts'
import { decodeJob, encodeJob } from '../lib/session/job-spec.ts'
import { inShell, launch, launchDirs, nothingLeft } from './helpers/launch.ts'
import { freePortRange } from './helpers/ports.ts'
import { scratch } from './helpers/scratch.ts'

const run = promisify(execFile)
const ROOT_MPI = ['--allow-run-as-root', '--oversubscribe']

/** The example program and its libraries, built for one MPI (or none), plus 8 MB of data to share. */
async function example (t: Test, mpicc?: string) {
  const s = await scratch(t)
  const dirs = launchDirs(s)
  const app = path.join(s.dir, 'hello')
  await run(path.join(ROOT, 'examples/hello/build.sh'), [...(mpicc ? [] : ['--no-mpi']), app], { env: { ...process.env, MPICC: mpicc ?? 'mpicc' } })
  await writeFile(path.join(app, 'libs/libdata.so'), randomBytes(8_000_000))
  return { s, dirs, app: path.join(app, 'app'), libs: path.join(app, 'libs') }
}

/** A loopback port nothing listens on (it was free a moment ago). */
async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Rank lines "rank R lib PATH": which mount each rank's libraries were mapped from. */
function libraryMounts (stdout: string, mounts: string): Map<string, Set<string>> {
  const byRank = new Map<string, Set<string>>()
  for (const m of stdout.matchAll(/^(rank \S+) lib (\S+)$/gm)) {
    const [, rank, lib] = m as unknown as [string, string, string]
    if (!lib.startsWith(`${mounts}/`)) continue
    const set = byRank.get(rank) ?? new Set<string>()
    set.add(path.dirname(lib))
    byRank.set(rank, set)
  }
  return byRank
}

t.test('local launcher, 4 ranks acting as 4 nodes: 4 mounts share the swarm, then all is gone', async (t) => {
  const { s, dirs, app, libs } = await example(t)
  const r = await launch(s, dirs, ['-n', '4', '--launcher', 'local', '--libs', libs, '--stats', app],
    { P2PRUN_NODE_PER_RANK: '1', P2PRUN_UPLOAD_LIMIT: String(4 * 1024 * 1024) })
  t.equal(r.exitCode, 0, String(r.stderr))
  t.equal(r.stdout.match(/hello, world, from libgreet; count 262150; plugin loaded/g)?.length, 4, 'four ranks ran')
  const mounts = [...libraryMounts(r.stdout, dirs.mounts).values()].flatMap((set) => [...set])
  t.equal(new Set(mounts).size, 4, `each rank loaded from its own node's mount: ${[...new Set(mounts)].join(' ')}`)
  t.equal(r.stdout.match(/^rank \S+ lib /gm)?.length, 12, 'every library of every rank came from a mount')
  const ratio = Number(r.stderr.match(/head sent .* = ([\d.]+)x the/)?.[1])
  t.ok(ratio > 0 && ratio < 3, `the head sent ${ratio}x the set to 4 nodes: nodes served each other`)
  await nothingLeft(t, s, dirs)
})

t.test('P2PRUN_NODE_NAME names the node (mount point %n) instead of the host name', async (t) => {
  const { s, dirs, app, libs } = await example(t)
  const r = await launch(s, dirs, ['-n', '1', '--launcher', 'local', '--libs', libs, app], { P2PRUN_NODE_NAME: 'alpha' })
  t.equal(r.exitCode, 0, String(r.stderr))
  const mounts = [...libraryMounts(r.stdout, dirs.mounts).values()].flatMap((set) => [...set])
  t.ok(mounts.length > 0 && mounts.every((m) => path.basename(m).endsWith('-alpha')), `libraries came from the node alpha's mount: ${mounts.join(' ')}`)
  await nothingLeft(t, s, dirs)
})

t.test('a node name and a mount point with a space, quotes and non-ASCII letters: every agent and rank step reads them alike', async (t) => {
  const { s, dirs, libs } = await example(t)
  const node = 'nœud "1"'
  for (const env of [{}, { P2PRUN_AGENT: 'node' }] as Record<string, string>[]) {
    const r = await launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', libs, '--mount-point', `${dirs.mounts}/é "x"/%j-%n`, 'sh', '-c', 'echo "$P2PRUN_MOUNT"'],
      { P2PRUN_NODE_NAME: node, ...env })
    t.equal(r.exitCode, 0, String(r.stderr))
    const mounts = r.stdout.split('\n')
    t.equal(mounts.length, 2, 'two ranks')
    t.ok(mounts.every((m) => m.startsWith(`${dirs.mounts}/é "x"/`) && m.endsWith(`-${node}`)), `${JSON.stringify(env)}: ${mounts.join(', ')}`)
    await nothingLeft(t, s, dirs)
  }
})

t.test('P2PRUN_DEBUG=2: each node agent keeps its log, with the description\'s route and its counters; without it, nothing is kept', async (t) => {
  const { s, dirs, app, libs } = await example(t)
  const r = await launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', libs, app], { P2PRUN_NODE_PER_RANK: '1', P2PRUN_DEBUG: '2' })
  t.equal(r.exitCode, 0, String(r.stderr))
  const logs = (await readdir(path.join(dirs.run, 'logs'))).sort()
  t.equal(logs.length, 2, `one log per node: ${logs.join(' ')}`)
  for (const name of logs) {
    const text = await readFile(path.join(dirs.run, 'logs', name), 'utf8')
    t.match(text, /description: from the job spec\n/, `${name}: the route`)
    t.match(text, / peers: from the tracker http:\/\/\S+\/announce\n/, `${name}: where it looks for peers`)
    t.match(text, /ready for the ranks on \S+-rank[01]\n/, `${name}: the mount`)
    t.match(text, / agent: native, no Node process\n/, `${name}: eager mode from a tracker, the description in the spec: the native node agent serves the mount`)
    t.match(text, /stats \{"infoHash":"[0-9a-f]{40}".*"swarm":\{"fromHead":\d+.*"cpu":\{"user":[\d.]+/, `${name}: the counters at the end`)
  }
  await rm(path.join(dirs.run, 'logs'), { recursive: true })
  await nothingLeft(t, s, dirs)
  const quiet = await launch(s, dirs, ['-n', '1', '--launcher', 'local', '--libs', libs, app])
  t.equal(quiet.exitCode, 0, String(quiet.stderr))
  await nothingLeft(t, s, dirs)
})

for (const [name, mpicc, extra] of [['openmpi', 'mpicc.openmpi', ROOT_MPI], ['mpich', 'mpicc.mpich', []]] as const) {
  t.test(`${name}: 4 MPI ranks load their libraries from the mount; exit codes propagate`, async (t) => {
    const { s, dirs, app, libs } = await example(t, mpicc)
    const r = await launch(s, dirs, ['-n', '4', '--launcher', name, ...extra, '--libs', libs, app], { P2PRUN_DEBUG: '2' })
    t.equal(r.exitCode, 0, r.stderr)
    for (let rank = 0; rank < 4; rank++) {
      t.match(r.stdout, new RegExp(`^rank ${rank}/4 hello, world, from libgreet`, 'm'), `rank ${rank} of 4 ran under MPI`)
    }
    const byRank = libraryMounts(r.stdout, dirs.mounts)
    t.equal(byRank.size, 4, 'all four ranks mapped their libraries from the mount')
    t.equal(new Set([...byRank.values()].flatMap((m) => [...m])).size, 1, 'one node, one agent, one mount')
    // Every rank's step is native/rank-step.c (local rank 0's starts the agent): no Node but the agent.
    const native = [...r.stderr.matchAll(/^p2prun rank: node \S+: local rank (\d) ready without Node$/gm)].map((m) => m[1]).sort()
    t.same(native, ['0', '1', '2', '3'], 'every rank ran the rank step without Node')
    await rm(path.join(dirs.run, 'logs'), { recursive: true, force: true })
    const failing = await launch(s, dirs, ['-n', '2', '--launcher', name, ...extra, '--libs', libs, 'sh', '-c', 'exit 7'])
    t.equal(failing.exitCode, 7, 'the program\'s exit code is p2prun\'s')
    await nothingLeft(t, s, dirs)
  })
}

// Four hosts named n1..n4 on this machine (test/helpers/uts-hosts.sh: each in a UTS namespace of its own).
const UTS_HOSTS = path.join(ROOT, 'test/helpers/uts-hosts.sh')
for (const [name, mpicc, hostArgs] of [
  ['openmpi', 'mpicc.openmpi', ['--allow-run-as-root', '--oversubscribe', '-H', 'n1,n2,n3,n4', '--map-by', 'ppr:1:node',
    '--mca', 'plm_rsh_agent', UTS_HOSTS, '--mca', 'plm_rsh_no_tree_spawn', '1']],
  // Hydra's proxies call back to this host by its name, which a fresh machine may not resolve: by address.
  ['mpich', 'mpicc.mpich', ['-f', 'hosts', '-ppn', '1', '-launcher', 'ssh', '-launcher-exec', UTS_HOSTS, '-localhost', '127.0.0.1']]
] as const) {
  t.test(`${name} on 4 hosts with --discovery nodes: each host's agent listens at its place in the launcher's hosts, and every rank loads from its own mount`, async (t) => {
    const { s, dirs, app, libs } = await example(t, mpicc)
    await writeFile(path.join(s.dir, 'hosts'), 'n1:1\n# the hostfile of Hydra\'s -f: host[:slots]\nn2\nn3:1\nn4\n')
    const base = await freePortRange(4)
    const rank = `exec 3<>/dev/tcp/127.0.0.1/$((${base} + \${HOSTNAME#n} - 1)) && echo "listening $HOSTNAME" && exec ${app}`
    const r = await launch(s, dirs, ['--discovery', 'nodes', '--node-host', '127.0.0.1', '--node-port', String(base), '--stats',
      '-n', '4', '--launcher', name, ...hostArgs, '--libs', libs, 'bash', '-c', rank], { P2PRUN_DEBUG: '2' })
    t.equal(r.exitCode, 0, r.stderr)
    t.same([...r.stdout.matchAll(/^listening (\S+)$/gm)].map((m) => m[1]).sort(), ['n1', 'n2', 'n3', 'n4'], 'each host\'s agent accepted a connection at the list\'s port + K')
    const mounts = [...libraryMounts(r.stdout, dirs.mounts).values()].flatMap((set) => [...set])
    t.same([...new Set(mounts)].map((m) => m.replace(/^.*-/, '')).sort(), ['n1', 'n2', 'n3', 'n4'], 'each rank loaded from its host\'s mount')
    t.match(r.stderr, /^p2prun: the nodes took their peers from the node list; head sent /m, '--stats says where the peers came from')
    for (const log of await readdir(path.join(dirs.run, 'logs'))) {
      t.match(await readFile(path.join(dirs.run, 'logs', log), 'utf8'), new RegExp(`peers: from the node list \\(4 nodes; this is 127\\.0\\.0\\.1:(${base}|${base + 1}|${base + 2}|${base + 3})\\)`), `${log}: no tracker`)
    }
    await rm(path.join(dirs.run, 'logs'), { recursive: true, force: true })
    await nothingLeft(t, s, dirs)
  })
}

t.test('SIGTERM while the libraries are loading: the launch stops and leaves nothing', async (t) => {
  const { s, dirs, libs } = await example(t)
  // A slow head and a program that reads the big library: the launch is mid-load when "reading" shows.
  const child = launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', libs, 'sh', '-c',
    'echo reading; exec cat "${LD_LIBRARY_PATH%%:*}/libdata.so" > /dev/null'], { P2PRUN_NODE_PER_RANK: '1', P2PRUN_UPLOAD_LIMIT: '100000' })
  await new Promise<void>((resolve) => child.stdout?.on('data', (d: Buffer) => { if (String(d).includes('reading')) resolve() }))
  child.kill('SIGTERM')
  const r = await child
  t.not(r.exitCode, 0, `stopped (exit ${r.exitCode})`)
  await nothingLeft(t, s, dirs)
})

t.test('bad launches: one line each, a non-zero exit, nothing left', async (t) => {
  const { s, dirs, app, libs } = await example(t)
  const closed = await closedPort()
  const cases: [string, string[], Record<string, string>, RegExp, number][] = [
    ['program not found', ['-n', '2', '--launcher', 'local', '--libs', libs, './no-such-app'], {}, /^p2prun: error: program \.\/no-such-app not found/, 2],
    ['libs missing', ['-n', '2', '--launcher', 'local', '--libs', path.join(s.dir, 'nope'), app], {}, /^p2prun: error: library directory .*nope does not exist/, 1],
    ['no libs, and a library the program needs is on no search path', ['-n', '2', '--launcher', 'local', app], {}, /^p2prun: error: libgreet\.so\.1: cannot open shared object file: No such file or directory \(needed by \S+\/app\) \(hint: /, 1],
    ['launcher not installed', ['-n', '2', '--launcher', 'mpich', '--libs', libs, app], { PATH: '/nonexistent' }, /^p2prun: error: the mpich launcher is not installed on this host \(hint: apt-get install mpich\)/, 1],
    ['--discovery dht with an I/O node\'s head', ['-n', '2', '--launcher', 'local', '--seeder', `http://127.0.0.1:${closed}/announce`, '--discovery', 'dht', '--libs', libs, app], {},
      /^p2prun: error: with --seeder, nodes find each other through that head's tracker: --discovery dht needs the launch's own head \(hint: leave out --seeder, or --discovery\)$/m, 2],
    ['seeder unreachable', ['-n', '2', '--launcher', 'local', '--seeder', `http://127.0.0.1:${closed}/announce`, '--libs', libs, app], {}, /^p2prun: error: the seeder at http:\/\/127\.0\.0\.1:\d+\/announce is unreachable: ECONNREFUSED/, 1]
  ]
  for (const [name, args, env, pattern, code] of cases) {
    const r = await launch(s, dirs, args, env)
    t.equal(r.exitCode, code, `${name}: exit ${code}`)
    t.match(r.stderr, pattern, name)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`)
  }
  // The mount fails on every node: each rank says which node and why; the launch fails.
  const noFuse = await launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', libs, app], { P2PRUN_NODE_PER_RANK: '1', P2PRUN_FUSE_DEVICE: '/nonexistent' })
  t.not(noFuse.exitCode, 0)
  const lines = noFuse.stderr.trim().split('\n')
  t.equal(lines.length, 2, 'one line per rank')
  for (const line of lines) t.match(line, /^p2prun rank: error: node \S+-rank[01]: the p2prun agent failed: FUSE is not available/)
  // Four ranks on one node: the node's failure is one line, not four.
  const oneNode = await launch(s, dirs, ['-n', '4', '--launcher', 'local', '--libs', libs, app], { P2PRUN_FUSE_DEVICE: '/nonexistent' })
  t.not(oneNode.exitCode, 0)
  t.equal(oneNode.stderr.trim().split('\n').length, 1, `one line for the node: ${oneNode.stderr}`)
  t.match(oneNode.stderr, /^p2prun rank: error: node \S+: the p2prun agent failed: FUSE is not available/)
  await nothingLeft(t, s, dirs)
})

t.test('--dry-run prints commands that do the launch, and starts nothing; run as printed, they launch', async (t) => {
  const { s, dirs, app, libs } = await example(t)
  const shown = await launch(s, dirs, ['--dry-run', '-n', '4', '--launcher', 'openmpi', '--map-by', 'ppr:1:node', '--mode', 'eager', '--libs', libs, app, 'arg'])
  t.equal(shown.exitCode, 0, shown.stderr)
  t.match(shown.stdout, new RegExp(`^eval "\\$\\(\\S+/bin/p2prun head --libs ${libs} --mount-point ${dirs.mounts}/%j-%n --mode eager ${app}\\)"\n` +
    `\\S*mpirun\\.openmpi -n 4 --map-by ppr:1:node -x P2PRUN_JOB \\S+/bin/p2prun-rank ${app} arg\n\\S+/bin/p2prun head --stop$`),
    'the head started with the launch\'s own options, the launcher\'s command with the job spec from the shell, the head stopped')
  await nothingLeft(t, s, dirs)

  const script = await launch(s, dirs, ['--dry-run', '-n', '2', '--launcher', 'local', '--libs', libs, app])
  t.equal(script.exitCode, 0, script.stderr)
  // The shell says the spec as it leaves, however it leaves: the head it names must no longer serve,
  // and this test stops it if it still does.
  const r = await inShell(s, dirs, `trap 'echo "spec $P2PRUN_JOB"' EXIT\n${script.stdout}\n`, { P2PRUN_NODE_PER_RANK: '1' })
  const job = decodeJob(/^spec (\S+)$/m.exec(r.stdout)?.[1])
  s.defer(() => fetch(job.stopUrl as string, { method: 'POST' }).catch(() => {}))
  t.equal(r.exitCode, 0, r.stderr)
  t.equal(r.stdout.match(/hello, world, from libgreet; count 262150; plugin loaded/g)?.length, 2, 'two ranks ran')
  const mounts = [...libraryMounts(r.stdout, dirs.mounts).values()].flatMap((set) => [...set])
  t.equal(new Set(mounts).size, 2, `each rank loaded from its own node's mount: ${[...new Set(mounts)].join(' ')}`)
  t.equal(r.stdout.match(/^rank \S+ lib /gm)?.length, 6, 'every library of every rank came from a mount')
  const tracker = new URL(job.trackers[0] as string)
  const refused = await new Promise<boolean>((resolve) => {
    const socket = connect({ host: tracker.hostname, port: Number(tracker.port) }, () => { socket.destroy(); resolve(false) })
    socket.on('error', () => resolve(true))
  })
  t.ok(refused, 'p2prun head --stop returned once the head had stopped serving')
  await nothingLeft(t, s, dirs)

  const bad: [string, string[], Record<string, string>, RegExp][] = [
    ['no program', ['head', '--libs', libs], {}, /^p2prun head: error: no program to run/],
    ['a launcher\'s option', ['head', '-n', '2', app], {}, /^p2prun head: error: p2prun head takes p2prun's own options, not -n \(hint: /],
    ['--seeder', ['head', '--seeder', 'http://127.0.0.1:1', app], {}, /^p2prun head: error: with --seeder the head is already running \(hint: /],
    ['--stop with no spec', ['head', '--stop'], {}, /^p2prun head: error: P2PRUN_JOB is not set: no head to stop \(hint: /],
    ['--stop with a launch\'s own spec', ['head', '--stop'], { P2PRUN_JOB: encodeJob({ ...job, stopUrl: undefined }) }, /^p2prun head: error: P2PRUN_JOB names a head that p2prun head did not start/],
    ['a library directory that is not there', ['head', '--libs', path.join(s.dir, 'none'), app], {}, /^p2prun head: error: library directory \S+ does not exist/]
  ]
  for (const [name, args, env, message] of bad) {
    const b = await inShell(s, dirs, [CLI, ...args].map((w) => `'${w.replaceAll("'", "'\\''")}'`).join(' '), env)
    t.equal(b.exitCode === 0, false, `${name}: fails`)
    t.match(b.stderr, message, name)
    t.equal(b.stderr.trim().split('\n').length, 1, `${name}: one line`)
  }
  await nothingLeft(t, s, dirs)
})

t.test('a Spack-view-like tree of absolute symlinks: refused with a hint that works, served with --follow-symlinks', async (t) => {
  const { s, dirs, app, libs } = await example(t)
  // The view: links to the libraries where an installer keeps them, by absolute path.
  const view = path.join(s.dir, 'view/lib')
  await mkdir(view, { recursive: true })
  for (const name of ['libgreet.so.1', 'libcount.so.2', 'libplugin.so']) await symlink(path.join(libs, name), path.join(view, name))
  const refused = await launch(s, dirs, ['-n', '2', '--launcher', 'local', '--libs', view, app])
  t.equal(refused.exitCode, 1)
  t.match(refused.stderr, /^p2prun: error: symlink \S+\/lib\w+\.so(\.\d)? -> \S+ can point outside the library directory: its target is absolute \(hint: .*--follow-symlinks/)
  const served = await launch(s, dirs, ['-n', '2', '--launcher', 'local', '--follow-symlinks', '--libs', view, app], { P2PRUN_NODE_PER_RANK: '1' })
  t.equal(served.exitCode, 0, served.stderr)
  const mapped = [...served.stdout.matchAll(/^rank \S+ lib (\S+)$/gm)].map((m) => m[1] as string)
  t.equal(mapped.filter((f) => f.startsWith(`${dirs.mounts}/`)).length, 6, `every library of both ranks from a mount: ${mapped.join(' ')}`)
  await nothingLeft(t, s, dirs)
})
