// MPICH's Hydra (mpiexec.hydra). Ranks see MPI_LOCALRANKID/MPI_LOCALNRANKS; -genv sets a variable
// for every rank (Hydra forwards the whole environment by default, but explicit is safer: a user's
// -genvnone must not lose p2prun's variables).
import { findMpi, valueTable, type LauncherAdapter } from './adapter.ts'
import { launchHosts } from './hosts.ts'

export const mpich: LauncherAdapter = {
  name: 'mpich',
  install: 'apt-get install mpich',
  valueOptions: valueTable(
    [['-n', '-np', '-ppn', '-f', '-hostfile', '-machinefile', '-hosts', '-host', '-launcher', '-launcher-exec',
      '-iface', '-bind-to', '-map-by', '-wdir', '-configfile', '-localhost', '-rmk', '-demux', '-genvlist',
      '-envlist', '-errfile-pattern', '-outfile-pattern', '-prepend-pattern', '-gdb', '-profile', '-ckpointlib',
      '-ckpoint-prefix', '-ckpoint-num', '-ckpoint-interval', '-nameserver', '-disable-auto-cleanup', '-usize',
      '-topolib', '-gpus-per-proc'], 1],
    [['-genv', '-env'], 2]),
  find: (env) => findMpi('mpich', ['mpiexec.hydra', 'mpirun.mpich', 'mpiexec.mpich'], env),
  command: (program, userArgs, forward, step, env) =>
    [program, ...userArgs, ...forward.flatMap((name) => ['-genv', name, env[name] ?? '']), ...step],
  hosts: (userArgs, env, cwd) => launchHosts(userArgs, { lists: ['-hosts', '-host'], files: ['-f', '-hostfile', '-machinefile'], fileEnv: 'HYDRA_HOST_FILE' }, env, cwd)
}
