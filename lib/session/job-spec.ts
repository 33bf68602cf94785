// The job spec: everything a launch hands to its nodes, in one environment variable (so every
// launcher forwards it the same way). It carries the launch's node settings too, resolved once
// where the launch started: ranks, agents and Slurm's hooks never load settings from their own
// working directory, so each value reaches a node by exactly one route. It is versioned and checked
// field by field when read, because it crosses from one installation of p2prun to another.
import path from 'node:path'
import { AGENT_CHOICES, DATA_MODES, FALLBACK_MODES, type AgentChoice, type Config, type DataMode, type FallbackMode } from '../config.ts'
import { P2prunError, quote, usageError } from '../errors.ts'
import type { SourceLayout } from '../source-layout.ts'

export const JOB_ENV = 'P2PRUN_JOB'
/** Test knob: every rank acts as its own node (own agent, own mount), so one host emulates many. */
export const NODE_PER_RANK_ENV = 'P2PRUN_NODE_PER_RANK'
/**
 * Variables that stay per node and go to the ranks beside the spec, when set: the node's own name
 * (rank-identity.ts), the test knob above, and P2PRUN_DEBUG (stacks in error lines).
 */
export const NODE_LOCAL_ENV = ['P2PRUN_NODE_NAME', NODE_PER_RANK_ENV, 'P2PRUN_DEBUG'] as const

/** A launch id that means "this Slurm job": the prolog's agents serve every step of the job. */
export const SLURM_LAUNCH = 'slurm'

/** Bumped when a field changes meaning: a node of another version refuses the spec by name. */
export const JOB_SPEC_VERSION = 3

/** One variable of a rank's environment (rank-env.ts). set: replaces; prepend: ours, then the task's own (':'); append: the task's own, then ours. */
export interface TaskEnvEntry {
  readonly name: string
  readonly op: 'set' | 'prepend' | 'append'
  readonly value: string
}

/** The settings a node needs for a launch: the launch's own, fixed when it started. */
export interface NodeSettings {
  /**
   * Which agent serves the node: the `agent` setting as the launch resolved it where it started
   * (head.ts: `native` or `node`, as lib/agent-choice.ts's agentKind says for the spec).
   */
  readonly agent: AgentChoice
  readonly mode: DataMode
  readonly storeDir: string
  readonly runDir: string
  readonly fuseDevice: string
  readonly maxConns: number
  readonly numwant: number
  readonly stallTimeoutMs: number
  readonly startTimeoutMs: number
  /** How long the node's agent stays for the user's next launch once this one has ended (warm-agent.ts). */
  readonly agentLingerMs: number
  readonly fallback: FallbackMode
  readonly owner: { readonly uid: number, readonly gid: number } | undefined
  readonly allowOther: boolean
  readonly quiet: boolean
}

export interface JobSpec {
  readonly version: typeof JOB_SPEC_VERSION
  /** Unique per launch: two launches of the same libraries never share agents or mounts. */
  readonly launchId: string
  readonly infoHash: string
  readonly descriptionUrl: string
  readonly trackers: readonly string[]
  readonly seeders: readonly string[]
  /** host:port (UDP) of the DHT nodes to bootstrap from: nodes find each other there, not at a tracker. */
  readonly dht?: readonly string[]
  /**
   * Peers from the launch's node list, not a tracker (launch-nodes.ts): `names`, the hosts mpirun
   * was given (a Slurm hostlist expression), else Slurm's, read on each node; node K of the list
   * is reached at `host` (%n: its name) and port `port` + K.
   */
  readonly nodeList?: { readonly host: string, readonly port: number, readonly names?: string }
  /** Mount point template (%i infohash prefix, %n node name, %j launch id). */
  readonly mountPoint: string
  /** Directories inside the mount to put first on LD_LIBRARY_PATH ('' is the mount itself). */
  readonly libDirs: readonly string[]
  /** The ranks' environment (rank-env.ts's taskEnvTemplate): %m in a value is the node's mount point, %% a percent sign. */
  readonly taskEnv: readonly TaskEnvEntry[]
  readonly node: NodeSettings
  /** POST here to stop the head (Slurm's epilog does, at job end). */
  readonly stopUrl?: string
  /** The job's secret (hex), which nodes prove to the tracker and to each other; absent: an open head. */
  readonly secret?: string
  /** The directories the set was described from (names in the set, paths on the submit host): the fallback's. */
  readonly sources?: SourceLayout['dirs']
  /** The program as a path inside the mount: ranks exec it from there (a set made from its load closure). */
  readonly program?: string
  /**
   * The description itself (deflated, base64), when it fits: the launcher's own fan-out then carries
   * it to every node, and neither the head nor the tracker is asked for it (descriptionOf).
   */
  readonly description?: string
  /** Directories inside the mount to put first on PYTHONPATH: the Python packages served. */
  readonly pythonPath?: readonly string[]
  /**
   * Directories (submit-host paths) whose files are in the mount at the same path, for the rank's
   * audit module: lookups in `whole` ones always go to the mount, in `some` only for files it has.
   */
  readonly redirect?: { readonly whole: readonly string[], readonly some: readonly string[] }
}

export function nodeSettings (config: Config): NodeSettings {
  const { agent, mode, storeDir, runDir, fuseDevice, maxConns, numwant, stallTimeoutMs, startTimeoutMs, agentLingerMs, fallback, owner, allowOther, quiet } = config
  return { agent, mode, storeDir, runDir, fuseDevice, maxConns, numwant, stallTimeoutMs, startTimeoutMs, agentLingerMs, fallback, owner, allowOther, quiet }
}

export function encodeJob (job: JobSpec): string {
  return Buffer.from(JSON.stringify(job)).toString('base64url')
}

export function decodeJob (raw: string | undefined): JobSpec {
  if (!raw) throw usageError(`${JOB_ENV} is not set: this step runs only under \`p2prun -n N ./app\``)
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'))
  } catch (err) {
    throw corrupt((err as Error).message)
  }
  const version = (value as { version?: unknown } | null)?.version
  if (version !== JOB_SPEC_VERSION) {
    throw new P2prunError('LAUNCH', `${JOB_ENV} is of version ${quote(String(version))}; this p2prun reads version ${JOB_SPEC_VERSION}`,
      { hint: 'install the same p2prun on the submitting host and on every node' })
  }
  checkJob(value)
  return value
}

const corrupt = (reason: string) => usageError(`${JOB_ENV} is corrupt (${reason})`, 'launch through p2prun, which sets it')

type Check = (v: unknown) => boolean
const isString: Check = (v) => typeof v === 'string'
const isAbsolute: Check = (v) => typeof v === 'string' && path.isAbsolute(v)
const isCount: Check = (v) => Number.isInteger(v) && (v as number) >= 1
const isBool: Check = (v) => typeof v === 'boolean'
const listOf = (each: Check): Check => (v) => Array.isArray(v) && v.every(each)
const oneOf = (values: readonly string[]): Check => (v) => typeof v === 'string' && values.includes(v)
const record = (fields: Record<string, Check>, optional: readonly string[] = []): Check => (v) =>
  typeof v === 'object' && v !== null && !Array.isArray(v) &&
  Object.entries(fields).every(([k, check]) => (optional.includes(k) && (v as Record<string, unknown>)[k] === undefined) || check((v as Record<string, unknown>)[k]))
const isId = (v: unknown) => Number.isInteger(v) && (v as number) >= 0

const NODE_FIELDS: Record<keyof NodeSettings, Check> = {
  agent: oneOf(AGENT_CHOICES),
  mode: oneOf(DATA_MODES),
  storeDir: isAbsolute,
  runDir: isAbsolute,
  fuseDevice: isAbsolute,
  maxConns: isCount,
  numwant: isCount,
  stallTimeoutMs: isCount,
  startTimeoutMs: isCount,
  agentLingerMs: (v) => Number.isFinite(v) && (v as number) >= 0,
  fallback: oneOf(FALLBACK_MODES),
  owner: record({ uid: isId, gid: isId }),
  allowOther: isBool,
  quiet: isBool
}

const JOB_FIELDS: Record<Exclude<keyof JobSpec, 'version'>, Check> = {
  launchId: (v) => typeof v === 'string' && /^[\w-]+$/.test(v),
  infoHash: (v) => typeof v === 'string' && /^[0-9a-f]{40}$/.test(v),
  descriptionUrl: isString,
  trackers: listOf(isString),
  seeders: listOf(isString),
  dht: listOf(isString),
  nodeList: record({ host: isString, port: isCount, names: isString }, ['names']),
  mountPoint: isString,
  libDirs: listOf(isString),
  taskEnv: listOf(record({ name: (v) => typeof v === 'string' && /^[A-Za-z_]\w*$/.test(v), op: oneOf(['set', 'prepend', 'append']), value: isString })),
  node: record(NODE_FIELDS, ['owner']),
  stopUrl: isString,
  secret: (v) => typeof v === 'string' && /^([0-9a-f]{2})+$/.test(v),
  sources: listOf(record({ name: isString, dir: isAbsolute })),
  program: isString,
  pythonPath: listOf(isString),
  description: (v) => typeof v === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(v),
  redirect: record({ whole: listOf(isAbsolute), some: listOf(isAbsolute) })
}
const OPTIONAL_JOB_FIELDS = ['dht', 'nodeList', 'stopUrl', 'secret', 'sources', 'program', 'pythonPath', 'redirect', 'description']

function checkJob (value: unknown): asserts value is JobSpec {
  for (const [name, check] of Object.entries(JOB_FIELDS)) {
    const field = (value as Record<string, unknown>)[name]
    if (field === undefined ? !OPTIONAL_JOB_FIELDS.includes(name) : !check(field)) {
      throw corrupt(field === undefined ? `${name} is missing` : `${name} is not valid`)
    }
  }
}

/** The job spec of a Slurm allocation made with --p2plibs, if this runs inside one. */
export function jobOfAllocation (env: NodeJS.ProcessEnv): JobSpec | undefined {
  const raw = env.SLURM_JOB_ID ? env[JOB_ENV] ?? env[`SLURM_SPANK_${JOB_ENV}`] : undefined
  if (!raw) return undefined
  const job = decodeJob(raw)
  return job.launchId === SLURM_LAUNCH ? job : undefined
}

/**
 * The most the description may take in the spec (base64 of its deflated bytes). One environment
 * string may hold 128 KiB on Linux (MAX_ARG_STRLEN), and the spec as a whole is encoded once more:
 * this leaves room for the rest. The 200-library bench set takes 34 KB; larger sets go by peers.
 */
export const SPEC_DESCRIPTION_MAX = 64 * 1024

/** Loaded when used: every rank's step reads the spec, and only the launcher and agents need zlib. */
const zlib = () => process.getBuiltinModule('node:zlib')

/** The description as the spec carries it, or undefined if it does not fit. */
export function specDescription (bytes: Uint8Array): string | undefined {
  const encoded = zlib().deflateRawSync(bytes, { level: 9 }).toString('base64')
  return encoded.length <= SPEC_DESCRIPTION_MAX ? encoded : undefined
}

/** The description bytes a spec carries, if it does; the caller checks them against the infohash. */
export function descriptionOf (job: JobSpec): Buffer | undefined {
  if (job.description === undefined) return undefined
  try {
    return zlib().inflateRawSync(Buffer.from(job.description, 'base64'), { maxOutputLength: 16 * SPEC_DESCRIPTION_MAX })
  } catch (err) {
    throw corrupt(`its description does not inflate: ${(err as Error).message}`)
  }
}

/** %i: infohash prefix, %n: node name, %j: launch id, %%: a percent sign. */
export function expandTemplate (template: string, vars: { infoHash: string, nodeName: string, launchId?: string }): string {
  return template.replace(/%([inj%])/g, (_, c: string) =>
    c === 'i' ? vars.infoHash.slice(0, 16) : c === 'n' ? vars.nodeName : c === 'j' ? (vars.launchId ?? '') : '%')
}

/** The launch's id on this node: a Slurm job's steps all share the prolog's agent. */
export function launchIdOf (job: JobSpec, env: NodeJS.ProcessEnv): string {
  return job.launchId === SLURM_LAUNCH ? `slurm-${env.SLURM_JOB_ID ?? 'unknown'}` : job.launchId
}

/** A search path (LD_LIBRARY_PATH, PYTHONPATH) with the mount's directories first and the user's after. */
export function libraryPath (mountPoint: string, libDirs: readonly string[], previous: string | undefined): string {
  const ours = libDirs.map((d) => (d === '' ? mountPoint : path.join(mountPoint, d)))
  return [...ours, ...(previous ? [previous] : [])].join(':')
}

/** The launcher's environment: ours plus the spec; the names a launcher must forward to every rank. */
export function launchEnvironment (env: NodeJS.ProcessEnv, spec: string): { launchEnv: NodeJS.ProcessEnv, forward: string[] } {
  const launchEnv: NodeJS.ProcessEnv = { ...env, [JOB_ENV]: spec }
  return { launchEnv, forward: [JOB_ENV, ...NODE_LOCAL_ENV.filter((name) => launchEnv[name] !== undefined)] }
}
