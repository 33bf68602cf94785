// A launch's node list as swarm/node-list.ts takes it: the launch's nodes, in order, from the job
// spec (the hosts mpirun/mpiexec was given: launcher/launchers/hosts.ts) or from Slurm's hostlist
// (SLURM_JOB_NODELIST, "n[01-16],gpu3": what every prolog and step of a job sees); this node's
// place in it; and where each node's agent listens (--node-host, --node-port). Names travel in
// Slurm's hostlist form both ways: a spec stays small whatever N for regularly named nodes.
import dns from 'node:dns'
import os from 'node:os'
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
 * The node list of `node` (what this node calls itself: rank-identity.ts's nodeName) in its launch:
 * the spec's names, else the Slurm hostlist in `env`. Node K of it is reached at the spec's host
 * template (%n: the node's name) and port + K, so that nodes sharing a host (emulated ones, or a
 * template naming one address) do not share a port.
 */
export async function launchNodeList (env: NodeJS.ProcessEnv, node: string, spec: NonNullable<JobSpec['nodeList']>): Promise<NodeList> {
  const hostlist = spec.names ?? slurmHostlist(env)
  if (!hostlist) throw usageError('--discovery nodes needs the job\'s node list, and SLURM_JOB_NODELIST is not set', 'run it in a --p2plibs job\'s hooks, or use --discovery tracker')
  const names = expandHostlist(hostlist)
  const index = await placeOf(node, names)
  if (index < 0) {
    throw usageError(`this node (${node}) is not in the launch's node list ${shortened(hostlist)}`,
      spec.names ? 'name the nodes to the launcher (-H, --hostfile) as they call themselves (hostname) or by address' : 'check SLURMD_NODENAME against the job\'s nodes')
  }
  const last = spec.port + names.length - 1
  if (last > 65535) throw usageError(`--node-port ${spec.port} leaves no port for the job's node ${names.length} (${last})`, `set --node-port at most ${65536 - names.length}`)
  return nodeListOf(names.map((name, k) => `${spec.host.replaceAll('%n', name)}:${spec.port + k}`), index, `the launch's node list ${shortened(hostlist)}`)
}

/**
 * Where `node` is in `names`: its own name, else its short name against theirs (a hostfile's
 * n1.cluster for the host n1, or the other way), else an address of this host's interfaces (a
 * hostfile of addresses), else localhost or a loopback address (one host alone), resolving the
 * names as a last resort. -1: not there.
 */
async function placeOf (node: string, names: readonly string[]): Promise<number> {
  const exact = names.indexOf(node)
  if (exact >= 0) return exact
  const short = (name: string) => name.split('.')[0]
  const byShort = names.findIndex((name) => !/^\d/.test(name) && short(name) === short(node))
  if (byShort >= 0) return byShort
  const local = new Set(Object.values(os.networkInterfaces()).flatMap((list) => (list ?? []).filter((a) => !a.internal).map((a) => a.address)))
  const byAddress = names.findIndex((name) => local.has(name))
  if (byAddress >= 0) return byAddress
  const byLoopback = names.findIndex(isLoopback)
  if (byLoopback >= 0) return byLoopback
  for (let k = 0; k < names.length; k += RESOLVE_AT_ONCE) {
    const batch = names.slice(k, k + RESOLVE_AT_ONCE)
    const found = await Promise.all(batch.map((name) => dns.promises.lookup(name, { all: true }).then((as) => as.some((a) => local.has(a.address) || isLoopback(a.address)), () => false)))
    const hit = found.indexOf(true)
    if (hit >= 0) return k + hit
  }
  return -1
}

/** localhost or a loopback address: this host, whichever host says it. */
export function isLoopback (name: string): boolean {
  return name === 'localhost' || name.startsWith('127.') || name === '::1'
}

const RESOLVE_AT_ONCE = 16

/** A hostlist for a message: a long one's head. */
function shortened (hostlist: string): string {
  return hostlist.length <= 80 ? hostlist : `${hostlist.slice(0, 77)}...`
}

/**
 * Names in Slurm's hostlist form, in their order: runs of one prefix with consecutive numbers of one
 * width become ranges ("10.77.1.[1-8]", "n[001-128]"), the rest stay as they are.
 */
export function compressHostlist (names: readonly string[]): string {
  const out: string[] = []
  let i = 0
  while (i < names.length) {
    const name = names[i] as string
    if (/[[\],\s]/.test(name) || name === '') throw usageError(`${JSON.stringify(name)} cannot be a node's name`, 'node names have no brackets, commas or spaces')
    const m = name.match(/^(.*?)(\d+)$/)
    if (!m) { out.push(name); i++; continue }
    const [, prefix, digits] = m as unknown as [string, string, string]
    const width = digits.length
    const numberAt = (k: number) => {
      const n = (names[k] ?? '').match(/^(.*?)(\d+)$/)
      return n && n[1] === prefix && (n[2] as string).length === width ? Number(n[2]) : undefined
    }
    let j = i + 1
    while (numberAt(j) === Number(digits) + (j - i)) j++
    // A range keeps its numbers' width: "n8-n10" are not one range of width 1.
    const last = String(Number(digits) + (j - i - 1)).padStart(width, '0')
    out.push(j - i === 1 ? name : `${prefix}[${digits}-${last}]`)
    i = j
  }
  return out.join(',')
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
