// No resource manager: p2prun starts the ranks itself on this host (`p2prun local-ranks`), with the
// same rank variables a launcher would set. Useful on a workstation and for tests.
import { valueTable, type LauncherAdapter } from './adapter.ts'

export function localAdapter (cli: readonly string[]): LauncherAdapter {
  return {
    name: 'local',
    install: '(built in)',
    valueOptions: valueTable([['-n', '-np'], 1]),
    find: async () => cli[0],
    // commander would read `-np 4` as -n with the value "p": local-ranks gets the count as -n.
    command: (_program, userArgs, _forward, step) =>
      [...cli, 'local-ranks', ...userArgs.map((a) => (a === '-np' ? '-n' : a)), '--', ...step],
    hosts: async () => ['localhost']
  }
}
