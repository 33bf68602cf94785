// What a short command prints, once it has exited: the few p2prun asks on the submit host (an
// MPI's --version banner, Python's sys.path, squeue). On node:child_process alone, on purpose:
// a launch pays for every module it loads, and execa (~130 modules) or node:util's ES module
// namespace (its lazy exports load worker_threads) cost more than these few lines.
import { execFile } from 'node:child_process'

export interface CommandOutput {
  readonly stdout: string
  readonly stderr: string
}

/** A failure to start, a non-zero exit or the timeout rejects, with what it printed until then. */
export class CommandFailed extends Error implements CommandOutput {
  readonly stdout: string
  readonly stderr: string
  constructor (message: string, stdout: string, stderr: string) {
    super(message)
    this.stdout = stdout
    this.stderr = stderr
  }
}

export function commandOutput (file: string, args: readonly string[],
  options: { readonly env?: NodeJS.ProcessEnv, readonly cwd?: string, readonly timeoutMs: number }): Promise<CommandOutput> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { env: options.env, cwd: options.cwd, timeout: options.timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new CommandFailed(err.message, stdout, stderr))
      else resolve({ stdout, stderr })
    })
    child.stdin?.end() // it reads nothing from us
  })
}
