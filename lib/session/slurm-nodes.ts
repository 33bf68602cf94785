// A Slurm job's node list as swarm/node-list.ts takes it: the job's nodes from Slurm's hostlist
// (SLURM_JOB_NODELIST, "n[01-16],gpu3": what every prolog and step of the job sees), this node's
// place in it (its SLURMD_NODENAME), and where each node's agent listens (--node-host, --node-port).
import { usageError } from '../errors.ts'
import { nodeListOf, type NodeList } from '../swarm/node-list.ts'
import type { JobSpec } from './job-spec.ts'

/**
 * The nodes whose agents serve the launch: an srun step's own (its tasks' SLURM_STEP_NODELIST), else
 * the job's (a prolog's: SLURM_JOB_NODELIST, or SLURM_NODELIST alone in 22.05's prolog).
 */
export function slurmHostlist (env: NodeJS.ProcessEnv): string | undefined {
  return env.SLURM_STEP_NODELIST || env.SLURM_JOB_NODELIST || env.SLURM_NODELIST || undefined
}

/**
 * The node list of `node` in the launch whose nodes `env` names (slurmHostlist): node K of it is
 * reached at the spec's host template (%n: the node's name) and port + K, so that nodes sharing a
 * host (emulated ones, or a template naming one address) do not share a port.
 */
export function slurmNodeList (env: NodeJS.ProcessEnv, node: string, spec: NonNullable<JobSpec['nodeList']>): NodeList {
  const hostlist = slurmHostlist(env)
  if (!hostlist) throw usageError('--discovery nodes needs the job\'s node list, and SLURM_JOB_NODELIST is not set', 'run it in a --p2plibs job\'s hooks, or use --discovery tracker')
  const names = expandHostlist(hostlist)
  const index = names.indexOf(node)
  if (index < 0) throw usageError(`this node (${node}) is not in the job's node list ${hostlist}`, 'check SLURMD_NODENAME against the job\'s nodes')
  const last = spec.port + names.length - 1
  if (last > 65535) throw usageError(`--node-port ${spec.port} leaves no port for the job's node ${names.length} (${last})`, `set --node-port at most ${65536 - names.length}`)
  return nodeListOf(names.map((name, k) => `${spec.host.replaceAll('%n', name)}:${spec.port + k}`), index, `the job's node list ${hostlist}`)
}

/**
 * Slurm's hostlist expression, expanded in order: names separated by commas outside brackets, each
 * with bracketed ranges and lists ("n[1-3,7]", "r[1-2]n[01-02]"); a range keeps its zero padding.
 */
export function expandHostlist (expr: string): string[] {
  const out: string[] = []
  let depth = 0
  let start = 0
  for (let i = 0; i <= expr.length; i++) {
    const c = expr[i]
    if (c === '[') depth++
    else if (c === ']') depth--
    if ((c === ',' && depth === 0) || i === expr.length) {
      const item = expr.slice(start, i).trim()
      if (item !== '') out.push(...expandName(item, expr))
      start = i + 1
    }
  }
  return out
}

function expandName (name: string, expr: string): string[] {
  const open = name.indexOf('[')
  if (open < 0) {
    if (name.includes(']')) throw badHostlist(expr)
    return [name]
  }
  const close = name.indexOf(']', open)
  if (close < 0) throw badHostlist(expr)
  const prefix = name.slice(0, open)
  const rest = expandName(name.slice(close + 1), expr)
  const out: string[] = []
  for (const part of name.slice(open + 1, close).split(',')) {
    const m = part.trim().match(/^(\d+)(?:-(\d+))?$/)
    if (!m) throw badHostlist(expr)
    const from = Number(m[1])
    const to = Number(m[2] ?? m[1])
    if (to < from || to - from > 1_000_000) throw badHostlist(expr)
    const width = (m[1] as string).length
    for (let n = from; n <= to; n++) for (const tail of rest) out.push(`${prefix}${String(n).padStart(width, '0')}${tail}`)
  }
  return out
}

function badHostlist (expr: string) {
  return usageError(`the job's node list ${JSON.stringify(expr)} is not a Slurm hostlist`, 'expected names like n[01-16],gpu3')
}
