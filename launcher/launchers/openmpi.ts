// Open MPI's mpirun (orterun). Ranks see OMPI_COMM_WORLD_LOCAL_RANK/LOCAL_SIZE; variables reach
// remote ranks only through -x.
import { findMpi, valueTable, type LauncherAdapter } from './adapter.ts'
import { launchHosts } from './hosts.ts'

export const openmpi: LauncherAdapter = {
  name: 'openmpi',
  install: 'apt-get install openmpi-bin',
  valueOptions: valueTable(
    [['-n', '-np', '--np', '-c', '-N', '--n', '-npernode', '--npernode', '-npersocket', '--npersocket',
      '-H', '-host', '--host', '-hostfile', '--hostfile', '-machinefile', '--machinefile', '--default-hostfile',
      '-map-by', '--map-by', '-rank-by', '--rank-by', '-bind-to', '--bind-to', '-x', '-wdir', '--wdir', '-wd',
      '--prefix', '-prefix', '--path', '-path', '--preload-files', '--output-filename', '-output-filename',
      '--app', '-am', '--am', '--tune', '--timeout', '--cpus-per-proc', '--cpus-per-rank', '--report-events',
      '--launch-agent', '-s', '--personality', '--ompi-server'], 1],
    [['-mca', '--mca', '-gmca', '--gmca'], 2]),
  find: (env) => findMpi('openmpi', ['mpirun.openmpi', 'orterun'], env),
  command: (program, userArgs, forward, step) => [program, ...userArgs, ...forward.flatMap((name) => ['-x', name]), ...step],
  hosts: (userArgs, env, cwd) => launchHosts(userArgs, {
    lists: ['-H', '-host', '--host'],
    files: ['-hostfile', '--hostfile', '-machinefile', '--machinefile', '--default-hostfile']
  }, env, cwd)
}
