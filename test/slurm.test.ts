// Real Slurm 22.05: a 4-node cluster on this host (slurm/cluster.sh) with p2prun's SPANK plugin and
// prolog/epilog hooks. Jobs are submitted with sbatch/srun as users would.
import { execFile } from 'node:child_process'
import { watch } from 'node:fs'
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { NATIVE_AGENT, ROOT } from './helpers/cli.ts'
import { mountsUnder } from './helpers/launch.ts'
import { freePortRange } from './helpers/ports.ts'
import { buildLoadPrograms } from './helpers/load-programs.ts'
import { scratch } from './helpers/scratch.ts'

const run = promisify(execFile)
const STATE = '/tmp/p2prun-slurm'
const env = { ...process.env, SLURM_CONF: `${STATE}/slurm.conf` }
const SLURM_COMMAND_MS = 120_000
/**
 * A Slurm command as users run it. One still running after 2 minutes is stopped: a job whose prolog
 * failed is held in the queue, and `sbatch --wait` would wait past the file's timeout, which kills
 * this process before its teardown stops the cluster. The cluster is then made usable again for the
 * tests after it (its jobs cancelled, its drained nodes resumed), and the test fails saying so.
 */
async function slurm (cmd: string, args: string[], extraEnv: Record<string, string> = {}) {
  try {
    const r = await run(cmd, args, { env: { ...env, ...extraEnv }, maxBuffer: 1e7, timeout: SLURM_COMMAND_MS })
    return { code: 0, stdout: r.stdout, stderr: r.stderr }
  } catch (err) {
    const e = err as { code?: number, killed?: boolean, stdout: string, stderr: string }
    if (!e.killed) return { code: e.code ?? 1, stdout: e.stdout, stderr: e.stderr }
    await run('scancel', ['--partition=debug'], { env }).catch(() => {})
    for (const node of ['n1', 'n2', 'n3', 'n4']) await run('scontrol', ['update', `nodename=${node}`, 'state=resume'], { env }).catch(() => {})
    return { code: 1, stdout: e.stdout, stderr: `${cmd} did not return within ${SLURM_COMMAND_MS / 1000} s (stopped; the queue cancelled, drained nodes resumed): ${e.stderr}` }
  }
}

await run(path.join(ROOT, 'slurm/cluster.sh'), ['up', '4'], { env })
t.teardown(() => run(path.join(ROOT, 'slurm/cluster.sh'), ['down'], { env }))

/** The example's libraries and program (no MPI: srun starts one task per node), plus 4 MB of data. */
async function example (t: Test) {
  const s = await scratch(t)
  await run(path.join(ROOT, 'examples/hello/build.sh'), ['--no-mpi', path.join(s.dir, 'hello')])
  await writeFile(path.join(s.dir, 'hello/libs/libdata.so'), randomBytes(4_000_000))
  return { s, app: path.join(s.dir, 'hello/app'), libs: path.join(s.dir, 'hello/libs') }
}

/**
 * Jobs leave the queue only after every node's epilog ran; srun/sbatch --wait return before that.
 * squeue is the only way to see it: a bounded wait.
 */
async function queueEmpty (): Promise<void> {
  let queue = ''
  for (let i = 0; i < 300; i++) {
    queue = (await slurm('squeue', ['-h', '-o', '%i %T %R'])).stdout.trim()
    if (queue === '') return
    await delay(100)
  }
  const { stdout } = await run('ps', ['-eo', 'pid,etime,args'])
  const ours = stdout.split('\n').filter((l) => /p2prun|slurmstepd|libdata/.test(l) && !/ps -eo/.test(l))
  throw new Error(`jobs still in the queue after 30 s: ${queue.replace(/\n/g, '; ')}; processes: ${ours.join('; ')}`)
}

/** No mount, agent state, node agent or head of any p2prun job is left on any node. */
async function nothingLeft (t: Test) {
  await queueEmpty()
  t.same(await mountsUnder(STATE), [], 'no mount on any node')
  t.same(await readdir(`${STATE}/p2prun-run`).catch(() => []), [], 'no agent state on any node')
  const { stdout } = await run('ps', ['-eo', 'args'])
  t.same(stdout.split('\n').filter((l) => / (node-agent|head-daemon) /.test(l)), [], 'no agent or head process')
}

function mountsOf (output: string): Set<string> {
  return new Set([...output.matchAll(/^rank \S+ lib (\S+)\/lib\w+\.so[.\d]*$/gm)].map((m) => m[1] as string))
}

t.test('sbatch -N 4 with #SBATCH --p2plibs: every node loads the libraries from its own mount, served by the native node agent alone', async (t) => {
  const { s, app, libs } = await example(t)
  const out = path.join(s.dir, 'out.txt')
  // Each node's agent, named by its ready.json: the program it runs.
  const agentOf = `${STATE}/p2prun-run/job-slurm-$SLURM_JOB_ID-$SLURMD_NODENAME/ready.json`
  await writeFile(path.join(s.dir, 'agent.sh'), `#!/bin/sh\npid=$(sed -n 's/.*"pid":\\([0-9]*\\).*/\\1/p' ${agentOf})\necho "agent $(readlink /proc/$pid/exe)"\n`, { mode: 0o755 })
  await writeFile(path.join(s.dir, 'job.sh'), `#!/bin/bash\n#SBATCH -N 4\n#SBATCH --p2plibs=${libs}\n#SBATCH -o ${out}\n` +
    `srun ${app}\nsrun sh -c 'grep -c p2prun /proc/self/maps || true'\nsrun ${path.join(s.dir, 'agent.sh')}\n`)
  const r = await slurm('sbatch', ['--wait', path.join(s.dir, 'job.sh')])
  t.equal(r.code, 0, r.stderr)
  const output = await readFile(out, 'utf8')
  t.equal(output.match(/hello, world, from libgreet; count 262150; plugin loaded/g)?.length, 4, 'four nodes ran the program')
  const mounts = mountsOf(output)
  t.equal(mounts.size, 4, `one mount per node: ${[...mounts].join(' ')}`)
  for (const m of mounts) t.match(m, new RegExp(`^${STATE}/mnt/slurm-\\d+-n[1-4]$`))
  t.match(output, /^0$/m, 'a program that loads nothing from the mount maps nothing of it')
  t.equal(output.match(new RegExp(`^agent ${NATIVE_AGENT}$`, 'gm'))?.length, 4, `the prolog fetched the description, and every node's agent is ${NATIVE_AGENT}: ${output}`)
  await nothingLeft(t)
})

t.test('--discovery nodes: each node\'s agent listens at its place in the job\'s node list, and every node loads from its mount', async (t) => {
  const { s, app, libs } = await example(t)
  const out = path.join(s.dir, 'out.txt')
  // All four nodes are this host: one address, a port per node (the node list's port + K).
  const base = await freePortRange(4)
  const listens = `srun bash -c 'exec 3<>/dev/tcp/127.0.0.1/$((${base} + SLURM_NODEID)) && echo "listening $SLURMD_NODENAME"'`
  const r = await slurm('sbatch', ['--wait', '-N', '4', `--p2plibs=${libs}`, '-o', out, '--wrap', `srun ${app} && ${listens}`],
    { P2PRUN_DISCOVERY: 'nodes', P2PRUN_NODE_HOST: '127.0.0.1', P2PRUN_NODE_PORT: String(base) })
  t.equal(r.code, 0, r.stderr)
  const output = await readFile(out, 'utf8')
  t.equal(output.match(/hello, world, from libgreet; count 262150; plugin loaded/g)?.length, 4, `four nodes ran the program: ${output}`)
  t.equal(mountsOf(output).size, 4, 'one mount per node')
  t.same(output.match(/^listening n\d$/gm)?.sort(), ['listening n1', 'listening n2', 'listening n3', 'listening n4'], 'node K\'s agent listens at the list\'s port + K')
  await nothingLeft(t)
})

t.test('srun -N 4 --p2plibs directly; a job without --p2plibs is untouched', async (t) => {
  const { app, libs } = await example(t)
  const r = await slurm('srun', ['-N', '4', `--p2plibs=${libs}`, app])
  t.equal(r.code, 0, r.stderr)
  t.equal(mountsOf(r.stdout).size, 4, 'each node\'s task loaded from its own mount')
  const plain = await slurm('srun', ['-N', '2', 'sh', '-c', 'echo "LD=[$LD_LIBRARY_PATH] JOB=[${P2PRUN_JOB:-}]"'])
  t.equal(plain.code, 0, plain.stderr)
  t.same(plain.stdout.trim().split('\n'), ['LD=[] JOB=[]', 'LD=[] JOB=[]'], 'no p2prun environment in a plain job')
  await nothingLeft(t)
})

t.test('--p2plibs=auto:PROGRAM: what the program loads, through its DT_RPATH too, comes from each node\'s mount', async (t) => {
  const s = await scratch(t)
  const p = await buildLoadPrograms(path.join(s.dir, 'progs'))
  const out = path.join(s.dir, 'auto.txt')
  const r = await slurm('sbatch', ['--wait', '-N', '4', `--p2plibs=auto:${p.rpathApp}`, '-o', out, '--wrap', `srun ${p.rpathApp}`])
  t.equal(r.code, 0, r.stderr)
  const output = await readFile(out, 'utf8')
  const mapped = [...output.matchAll(/^mapped (\S*librp\.so\.1)$/gm)].map((m) => m[1] as string)
  t.equal(mapped.length, 4, `four tasks mapped librp.so.1: ${output}`)
  // Its DT_RPATH names the shared directory, searched before LD_LIBRARY_PATH: only the audit module,
  // which the task hook set from the node state, sends the lookup to the node's mount.
  const inMount = new RegExp(`^${STATE}/mnt/slurm-\\d+-n[1-4]${p.rpathLibDir}/librp\\.so\\.1$`)
  t.equal(mapped.filter((m) => inMount.test(m)).length, 4, `each from its node's mount: ${mapped.join(' ')}`)
  t.equal(new Set(mapped).size, 4, 'four mounts')
  const bare = await slurm('sbatch', ['--p2plibs=auto', '--wrap', 'true'])
  t.not(bare.code, 0)
  t.match(bare.stderr, /--p2plibs=auto needs the program whose libraries to serve \(hint: --p2plibs=auto:\.\/app/)
  t.notMatch(bare.stdout, /Submitted batch job/, 'no job was queued')
  await nothingLeft(t)
})

t.test('p2prun inside allocations: reuses the --p2plibs agents, or launches through srun with its own', async (t) => {
  const { s, app, libs } = await example(t)
  const bin = path.join(ROOT, 'bin/p2prun')
  const withLibs = await slurm('sbatch', ['--wait', '-N', '4', `--p2plibs=${libs}`, '-o', path.join(s.dir, 'a.txt'), '--wrap', `${bin} -N 4 -n 4 ${app}`])
  t.equal(withLibs.code, 0, withLibs.stderr)
  const a = await readFile(path.join(s.dir, 'a.txt'), 'utf8')
  t.match(a, /using the libraries this allocation mounted/)
  t.equal([...mountsOf(a)].filter((m) => /\/slurm-\d+-n\d$/.test(m)).length, 4, 'the prolog\'s mounts')
  const without = await slurm('sbatch', ['--wait', '-N', '4', '-o', path.join(s.dir, 'b.txt'), '--wrap', `${bin} -N 4 -n 4 --libs ${libs} ${app}`])
  t.equal(without.code, 0, without.stderr)
  t.equal(mountsOf(await readFile(path.join(s.dir, 'b.txt'), 'utf8')).size, 4, 'p2prun\'s own agents, one per node, via srun')
  // With --discovery nodes, those agents take their peers from the step's node list: each rank finds its node's agent at the list's port + K.
  const base = await freePortRange(4)
  const byList = await slurm('sbatch', ['--wait', '-N', '4', '-o', path.join(s.dir, 'c.txt'), '--wrap',
    `${bin} --discovery nodes -N 4 -n 4 --libs ${libs} bash -c 'exec 3<>/dev/tcp/127.0.0.1/$((${base} + SLURM_NODEID)) && echo "listening $SLURMD_NODENAME"'`],
  { P2PRUN_NODE_HOST: '127.0.0.1', P2PRUN_NODE_PORT: String(base) })
  t.equal(byList.code, 0, byList.stderr)
  const c = await readFile(path.join(s.dir, 'c.txt'), 'utf8')
  t.same(c.match(/^listening n\d$/gm)?.sort(), ['listening n1', 'listening n2', 'listening n3', 'listening n4'], `node K's agent at the list's port + K: ${c}`)
  await nothingLeft(t)
})

t.test('a job that launches twice with agent-linger: the second launch is handed to the first\'s agents, and the job\'s epilog stops them', async (t) => {
  const { s, app, libs } = await example(t)
  const bin = path.join(ROOT, 'bin/p2prun')
  // Each rank prints the pid of the agent that serves its node (its ready.json) and its parent, then runs the program.
  const rank = `r=$(sed 's/.*"pid":\\([0-9]*\\).*/\\1/' "$P2PRUN_RUN_DIR"/job-*-$SLURMD_NODENAME/ready.json); ` +
    `echo "$SLURMD_NODENAME agent $r $(cut -d' ' -f4 /proc/$r/stat)"; exec ${app}`
  const script = path.join(s.dir, 'job.sh')
  await writeFile(script, `#!/bin/sh\nexport P2PRUN_AGENT_LINGER=300 P2PRUN_RUN_DIR=/tmp/p2prun-run-$(id -u)\n` +
    `for i in 1 2; do ${bin} -N 4 -n 4 --libs ${libs} sh -c '${rank.replace(/'/g, `'\\''`)}' || exit 1; done\n`, { mode: 0o755 })
  const job = await slurm('sbatch', ['--wait', '-N', '4', '-o', path.join(s.dir, 'out.txt'), script])
  t.equal(job.code, 0, job.stderr)
  const out = await readFile(path.join(s.dir, 'out.txt'), 'utf8')
  t.equal(out.match(/hello, world, from libgreet/g)?.length, 8, `both launches ran on the 4 nodes: ${out}`)
  const byNode = new Map<string, Array<{ pid: string, parent: string }>>()
  for (const [, node, pid, parent] of out.matchAll(/^(n\d) agent (\d+) (\d+)$/gm)) {
    byNode.set(node as string, [...byNode.get(node as string) ?? [], { pid: pid as string, parent: parent as string }])
  }
  t.equal(byNode.size, 4, 'every node said its agent')
  // The native agent lingers: it serves each launch in a child it forks for it (native/agent/linger.c).
  for (const [node, [a, b]] of byNode) {
    t.ok(a && b && a.parent === b.parent && a.pid !== b.pid, `${node}: the same lingering agent served both launches, each in a child (${JSON.stringify([a, b])})`)
  }
  await nothingLeft(t) // the epilog stopped the lingering agents: no node-agent process is left
})

t.test('a job that fails, and a job cancelled while loading, leave nothing behind', async (t) => {
  const { s, libs } = await example(t)
  // Fails with its own code, after each task saw its libraries on its node's mount (else: 1).
  const failing = await slurm('sbatch', ['--wait', '-N', '4', `--p2plibs=${libs}`, '-o', '/dev/null', '--wrap',
    'srun sh -c \'test -e "${LD_LIBRARY_PATH%%:*}/libdata.so" && exit 3\''])
  t.equal(failing.code, 3, 'the job ran on the mounted libraries, then failed')
  await nothingLeft(t)

  const started = path.join(s.dir, 'started')
  await mkdir(started)
  const loaded = watchFor(started)
  // A slow head: the set is still loading when the tasks announce themselves (4 eager nodes pull
  // 16 MB at 500 KB/s). Much slower (50 KB/s) and a node's read can get no byte for the whole stall
  // timeout: under fuse-native, which did not pass FUSE interrupts on, a killed task blocked in that
  // read held the step until EIO, and Slurm needed 72 s to complete the job (the native server
  // answers interrupts EINTR at once: test/mount-failures.test.ts).
  // The task becomes the reader (exec): Slurm's proctrack/linuxproc finds a step's processes by
  // walking /proc, and a `cat` forked in the instant it signals escapes the cancel (seen once: the
  // shell died, the cat read on until the stall timeout, and the job stayed COMPLETING for 60 s).
  const job = slurm('sbatch', ['--wait', '-N', '4', `--p2plibs=${libs}`, '-o', '/dev/null', '--wrap',
    `srun sh -c 'touch ${started}/$SLURMD_NODENAME; exec cat "\${LD_LIBRARY_PATH%%:*}/libdata.so" > /dev/null'`], { P2PRUN_UPLOAD_LIMIT: '500000' })
  await loaded
  const { stdout } = await run('squeue', ['-h', '-o', '%i'], { env })
  const ids = stdout.trim().split('\n').filter(Boolean)
  t.ok(ids.length > 0, 'the job was in the queue')
  for (const id of ids) await run('scancel', [id], { env })
  await job
  await nothingLeft(t)
  // Not sbatch --wait's exit code: sbatch reads it as soon as the job counts as finished, which a
  // cancelled job does at once, before its batch script's end is recorded (0 at times: seen in CI).
  // Once out of the queue (nothingLeft waits for that), slurmctld still holds its final state.
  for (const id of ids) {
    t.match((await run('scontrol', ['show', 'job', '-o', id], { env })).stdout, /JobState=CANCELLED\b/, `job ${id} cancelled`)
  }
})

t.test('a bad --p2plibs fails at submit time, with p2prun\'s message', async (t) => {
  const { s } = await example(t)
  await writeFile(path.join(s.dir, 'afile'), 'x')
  for (const [dir, why] of [[path.join(s.dir, 'missing'), /library directory .*missing does not exist/], [path.join(s.dir, 'afile'), /afile is not a directory/]] as const) {
    const r = await slurm('sbatch', [`--p2plibs=${dir}`, '--wrap', 'true'])
    t.not(r.code, 0)
    t.match(r.stderr, why)
    t.match(r.stderr, /sbatch: error: p2plibs: --p2plibs=.* failed/)
    t.notMatch(r.stdout, /Submitted batch job/, 'no job was queued')
  }
  await nothingLeft(t)
})

t.test('the head of a job cancelled while pending, and of a job array, leaves once the queue holds none of its jobs', async (t) => {
  const { libs } = await example(t)
  const watchFast = { P2PRUN_SLURM_WATCH: '0.2' }
  const pending = await slurm('sbatch', ['--begin=now+3600', `--p2plibs=${libs}`, '-o', '/dev/null', '--wrap', 'true'], watchFast)
  t.equal(pending.code, 0, pending.stderr)
  t.equal((await heads()).length, 1, 'its head runs while the job waits')
  const id = pending.stdout.match(/Submitted batch job (\d+)/)?.[1] ?? ''
  await slurm('scancel', [id])
  await noHeads()
  t.pass('the job cancelled before it ran (no prolog, no epilog): its head left')
  // One task at a time: the second runs after the first one's epilog, which used to stop the shared head.
  const array = await slurm('sbatch', ['--wait', '--array=1-2%1', '-N', '1', `--p2plibs=${libs}`, '-o', '/dev/null', '--wrap',
    'test -e "${LD_LIBRARY_PATH%%:*}/libdata.so"'], watchFast)
  t.equal(array.code, 0, `both tasks saw their libraries on the mount: ${array.stderr}`)
  await noHeads()
  await nothingLeft(t)
})

t.test('--p2plibs of a Spack-view-like directory of absolute links: refused with the hint, served with P2PRUN_FOLLOW_SYMLINKS=1', async (t) => {
  const { s, libs } = await example(t)
  const view = path.join(s.dir, 'view')
  await mkdir(view)
  for (const name of ['libgreet.so.1', 'libcount.so.2', 'libplugin.so', 'libdata.so']) await symlink(path.join(libs, name), path.join(view, name))
  const refused = await slurm('sbatch', [`--p2plibs=${view}`, '--wrap', 'true'])
  t.not(refused.code, 0)
  t.match(refused.stderr, /can point outside the library directory: its target is absolute \(hint: .*P2PRUN_FOLLOW_SYMLINKS=1 for sbatch --p2plibs/)
  const served = await slurm('sbatch', ['--wait', '-N', '2', `--p2plibs=${view}`, '-o', '/dev/null', '--wrap',
    'srun sh -c \'test -f "${LD_LIBRARY_PATH%%:*}/libdata.so" && ! test -L "${LD_LIBRARY_PATH%%:*}/libdata.so"\''], { P2PRUN_FOLLOW_SYMLINKS: '1' })
  t.equal(served.code, 0, `the targets were copied in: each node's mount has the files themselves (${served.stderr})`)
  await nothingLeft(t)
})

/** The heads of --p2plibs jobs running on this host. */
async function heads (): Promise<string[]> {
  const { stdout } = await run('ps', ['-eo', 'args'])
  return stdout.split('\n').filter((l) => / head-daemon /.test(l))
}

/** A head notices its jobs are gone at its next look at the queue: a bounded wait, as for the queue itself. */
async function noHeads (): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if ((await heads()).length === 0) return
    await delay(100)
  }
  throw new Error(`a head still runs after 30 s: ${(await heads()).join('; ')}`)
}

/** Resolves when something appears in `dir` (a task's mark). */
function watchFor (dir: string): Promise<void> {
  return new Promise((resolve) => {
    const w = watch(dir, () => { w.close(); resolve() })
  })
}

t.test('an installed copy (scripts/install.sh: what the Debian package carries) runs a --p2plibs job', async (t) => {
  const { s, app, libs } = await example(t)
  const prefix = path.join(s.dir, 'opt/p2prun')
  await run('bash', [path.join(ROOT, 'scripts/install.sh'), '--prefix', prefix])
  const installed = path.join(prefix, 'lib/p2prun')
  // The cluster again, configured with the installation's plugin, hooks and p2prun.
  await run(path.join(ROOT, 'slurm/cluster.sh'), ['down'], { env })
  await run(path.join(ROOT, 'slurm/cluster.sh'), ['up', '4'], { env: { ...env, P2PRUN_SLURM_INSTALL: installed } })
  const plugstack = await readFile(`${STATE}/plugstack.conf`, 'utf8')
  t.match(plugstack, new RegExp(`^required ${installed}/slurm/p2plibs\\.so p2prun=${installed}/bin/p2prun `), 'the installation\'s plugin and p2prun')
  const out = path.join(s.dir, 'installed.txt')
  const r = await slurm('sbatch', ['--wait', '-N', '4', `--p2plibs=${libs}`, '-o', out, '--wrap', `srun ${app}`])
  t.equal(r.code, 0, r.stderr)
  const output = await readFile(out, 'utf8')
  t.equal(output.match(/hello, world, from libgreet; count 262150; plugin loaded/g)?.length, 4, 'four nodes ran the program')
  t.equal(mountsOf(output).size, 4, 'each from its own node\'s mount')
  await nothingLeft(t)
})
