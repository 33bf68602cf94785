// Pure parts of the launcher: command-line splitting, each adapter's command, rank identity.
import os from 'node:os'
import t from 'tap'
import { expandTemplate, libraryPath } from '../lib/session/job-spec.ts'
import { nodeIdentity, slurmTasksOnNode } from '../lib/session/rank-identity.ts'
import { localAdapter } from '../launcher/launchers/local.ts'
import { mpich } from '../launcher/launchers/mpich.ts'
import { openmpi } from '../launcher/launchers/openmpi.ts'
import { srun } from '../launcher/launchers/srun.ts'
import { splitRunArgs } from '../launcher/run-args.ts'

t.test('split: p2prun options, launcher options (with their values), then the program', async (t) => {
  const cases: [string, string[], ReadonlyMap<string, number>, object][] = [
    ['the usual', ['-n', '16000', '--libs', 'L', './app', '-x', '1'], openmpi.valueOptions,
      { launcherArgs: ['-n', '16000'], program: ['./app', '-x', '1'], options: { libs: ['L'] } }],
    ['two-value --mca, -x NAME, --opt=value', ['--mca', 'btl', 'self,tcp', '-x', 'FOO', '--map-by=ppr:1:node', '--libs=A', '--libs', 'B', 'app'],
      openmpi.valueOptions, { launcherArgs: ['--mca', 'btl', 'self,tcp', '-x', 'FOO', '--map-by=ppr:1:node'], program: ['app'], options: { libs: ['A', 'B'] } }],
    ['hydra -genv takes two', ['-genv', 'A', 'B', '-ppn', '1', '--dry-run', 'app'], mpich.valueOptions,
      { launcherArgs: ['-genv', 'A', 'B', '-ppn', '1'], program: ['app'], options: { dryRun: true } }],
    ['srun short and long', ['-N', '4', '--ntasks-per-node=2', '--mode', 'block', '-l', 'app'], srun.valueOptions,
      { launcherArgs: ['-N', '4', '--ntasks-per-node=2', '-l'], program: ['app'], options: { settings: { mode: 'block' } } }],
    ['after --, p2prun options go to the launcher', ['--libs', 'L', '--', '--stats', 'app'], openmpi.valueOptions,
      { launcherArgs: ['--stats'], program: ['app'], options: { stats: false, libs: ['L'] } }],
    ['the program\'s own options are its own', ['--libs', 'L', 'app', '--libs', 'X', '-n', '3'], openmpi.valueOptions,
      { launcherArgs: [], program: ['app', '--libs', 'X', '-n', '3'], options: { libs: ['L'] } }],
    ['unknown launcher flags take no value', ['--oversubscribe', '--allow-run-as-root', 'app'], openmpi.valueOptions,
      { launcherArgs: ['--oversubscribe', '--allow-run-as-root'], program: ['app'] }]
  ]
  for (const [name, argv, table, expected] of cases) t.match(splitRunArgs(argv, table), expected, name)
  t.throws(() => splitRunArgs(['-n', '4'], openmpi.valueOptions), { code: 'USAGE', message: 'no program to run' })
  t.throws(() => splitRunArgs(['--libs'], openmpi.valueOptions), { message: '--libs needs a value' })
  t.throws(() => splitRunArgs(['--mca', 'btl'], openmpi.valueOptions), { message: 'launcher option --mca needs 2 values' })
})

t.test('split: the rank count must be a positive whole number, whichever launcher takes it', async (t) => {
  const refused: [string[], string][] = [
    [['-n', 'abc', 'app'], '-n expects a positive whole number, got "abc"'],
    [['-n', '0', 'app'], '-n expects a positive whole number, got "0"'],
    [['-np', '2.5', 'app'], '-np expects a positive whole number, got "2.5"'],
    [['-n', '-4', 'app'], '-n expects a positive whole number, got "-4"'],
    [['-n', '4\x1b[2J', 'app'], '-n expects a positive whole number, got "4\\x1b[2J"']
  ]
  for (const table of [localAdapter([]).valueOptions, openmpi.valueOptions, mpich.valueOptions, srun.valueOptions]) {
    for (const [argv, message] of refused.filter(([argv]) => table.has(argv[0] as string))) {
      t.throws(() => splitRunArgs(argv, table), { code: 'USAGE', message, hint: /^for example -np? 4$/ }, message)
    }
  }
  t.match(splitRunArgs(['-np', '16', 'app'], mpich.valueOptions), { launcherArgs: ['-np', '16'] })
  t.throws(() => splitRunArgs(['--libs', 'L', '--', '-n', 'x', 'app'], openmpi.valueOptions), { message: /^-n expects/ }, 'after --, still the launcher\'s -n')
})

t.test('each adapter builds its launcher\'s command and forwards p2prun\'s variables its own way', async (t) => {
  const step = ['/opt/p2prun/bin/p2prun-rank', './app', 'a1']
  const env = { P2PRUN_JOB: 'abc', P2PRUN_MODE: 'block' }
  const forward = ['P2PRUN_JOB', 'P2PRUN_MODE']
  t.same(openmpi.command('/usr/bin/mpirun', ['-n', '4'], forward, step, env),
    ['/usr/bin/mpirun', '-n', '4', '-x', 'P2PRUN_JOB', '-x', 'P2PRUN_MODE', ...step])
  t.same(mpich.command('/usr/bin/mpiexec.hydra', ['-n', '4'], forward, step, env),
    ['/usr/bin/mpiexec.hydra', '-n', '4', '-genv', 'P2PRUN_JOB', 'abc', '-genv', 'P2PRUN_MODE', 'block', ...step])
  t.same(srun.command('/usr/bin/srun', ['-N', '4', '-n', '8'], forward, step, env), ['/usr/bin/srun', '-N', '4', '-n', '8', ...step],
    'srun exports the whole environment by default')
  t.same(srun.command('/usr/bin/srun', ['--export=NONE,HOME'], forward, step, env),
    ['/usr/bin/srun', '--export=NONE,HOME,P2PRUN_JOB,P2PRUN_MODE', ...step], 'an explicit --export gets p2prun\'s names')
  t.same(srun.command('/usr/bin/srun', ['--export=ALL,X=1'], forward, step, env), ['/usr/bin/srun', '--export=ALL,X=1', ...step])
  const local = localAdapter(['/opt/p2prun/bin/p2prun'])
  t.same(local.command('/opt/p2prun/bin/p2prun', ['-n', '4'], forward, step, env),
    ['/opt/p2prun/bin/p2prun', 'local-ranks', '-n', '4', '--', ...step])
  t.same(local.command('/opt/p2prun/bin/p2prun', ['-np', '4'], forward, step, env),
    ['/opt/p2prun/bin/p2prun', 'local-ranks', '-n', '4', '--', ...step], 'local-ranks takes the count as -n')
})

t.test('node identity from Open MPI, MPICH, Slurm and the local launcher; the one-node-per-rank knob', async (t) => {
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h', OMPI_COMM_WORLD_RANK: '5', OMPI_COMM_WORLD_LOCAL_RANK: '1', OMPI_COMM_WORLD_LOCAL_SIZE: '4' }),
    { name: 'h', rank: 5, localRank: 1, localSize: 4 })
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h', PMI_RANK: '2', MPI_LOCALRANKID: '0', MPI_LOCALNRANKS: '2' }), { rank: 2, localRank: 0, localSize: 2 })
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h', SLURM_PROCID: '7', SLURM_LOCALID: '1', SLURMD_NODENAME: 'n3', SLURM_NODEID: '2', SLURM_STEP_TASKS_PER_NODE: '2(x2),3,1' }),
    { name: 'n3', rank: 7, localRank: 1, localSize: 3 })
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h', P2PRUN_RANK: '3', P2PRUN_LOCAL_RANK: '3', P2PRUN_LOCAL_SIZE: '4' }), { rank: 3, localRank: 3, localSize: 4 })
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h', PMIX_RANK: '6', PMIX_LOCAL_RANK: '2', PMIX_LOCAL_SIZE: '3' }), { rank: 6, localRank: 2, localSize: 3 }, 'PMIx (prterun, a PMIx-launched srun)')
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h', FLUX_TASK_RANK: '9', FLUX_TASK_LOCAL_ID: '1' }), { rank: 9, localRank: 1, localSize: undefined }, 'Flux')
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h' }), { name: 'h', rank: 0, localRank: undefined, localSize: undefined })
  t.equal(nodeIdentity({}).name, os.hostname(), 'the host name when nothing names the node')
  t.match(nodeIdentity({ P2PRUN_NODE_NAME: 'h', P2PRUN_NODE_PER_RANK: '1', OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_LOCAL_RANK: '3' }),
    { name: 'h-rank3', localRank: 0, localSize: 1 })
  t.equal(slurmTasksOnNode({ SLURM_TASKS_PER_NODE: '4', SLURM_NODEID: '0' }), 4)
  t.equal(slurmTasksOnNode({ SLURM_TASKS_PER_NODE: '2(x2)', SLURM_NODEID: '5' }), undefined)
})

t.test('mount point templates and the library path', async (t) => {
  t.equal(expandTemplate('/tmp/p2prun/%i/%j-%n%%', { infoHash: 'abcdef0123456789ffff', nodeName: 'n1', launchId: '42' }),
    '/tmp/p2prun/abcdef0123456789/42-n1%')
  t.equal(libraryPath('/m', [''], undefined), '/m')
  t.equal(libraryPath('/m', ['libs', 'python'], '/usr/local/lib'), '/m/libs:/m/python:/usr/local/lib')
})
