// Every setting p2prun reads, from four layers: command-line flags, then P2PRUN_* environment
// variables, then the user's YAML file (./p2prun.yaml, or --config / P2PRUN_CONFIG), then the
// site's (/etc/p2prun/p2prun.yaml, or P2PRUN_SITE_CONFIG). Values are parsed and checked here,
// once; the rest of the code receives a frozen, typed Config and trusts it.
import { readFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { configError, quote } from './errors.ts'

export type DataMode = 'block' | 'file' | 'eager'
export const DATA_MODES: readonly DataMode[] = ['block', 'file', 'eager']
export type FallbackMode = 'auto' | 'off'
export type AgentChoice = 'auto' | 'native' | 'node'
export const AGENT_CHOICES: readonly AgentChoice[] = ['auto', 'native', 'node']
export const FALLBACK_MODES: readonly FallbackMode[] = ['auto', 'off']
/** What a launch serves of the program's load closure (program-set.ts says what each means). */
export type LibsPolicy = 'network' | 'nonsystem' | 'all'
export const LIBS_POLICIES: readonly LibsPolicy[] = ['network', 'nonsystem', 'all']
/** How ranks are started (launcher/launchers/ has one adapter for each); auto chooses one. */
export type LauncherName = 'local' | 'openmpi' | 'mpich' | 'srun'
export const LAUNCHER_NAMES: readonly LauncherName[] = ['local', 'openmpi', 'mpich', 'srun']
export type LauncherChoice = LauncherName | 'auto'
/** How a launch's nodes get the description: in the job spec the launcher forwards, or from peers. */
export type DescriptionRoute = 'spec' | 'peers'
export const DESCRIPTION_ROUTES: readonly DescriptionRoute[] = ['spec', 'peers']
/**
 * How a job's nodes find each other: through the head's tracker, a DHT bootstrapped from the head
 * (no tracker), or the job's own node list (Slurm's; no tracker, no DHT: swarm/node-list.ts).
 */
export type Discovery = 'tracker' | 'dht' | 'nodes'
export const DISCOVERY_MODES: readonly Discovery[] = ['tracker', 'dht', 'nodes']
/** In a library list: the program's load closure instead of (or beside) named directories. */
export const AUTO_LIBS = 'auto'

type Kind = 'string' | 'int' | 'seconds' | 'bool' | 'path' | 'paths'

interface Spec {
  readonly kind: Kind
  readonly help: string
  readonly min?: number
  readonly max?: number
  readonly choices?: readonly string[]
}

/** Names are kebab-case; the flag is --name, the variable P2PRUN_NAME, the YAML key name. */
export const SETTINGS = {
  host: { kind: 'string', help: 'address the tracker and seeder listen on (default: the advertised one; 0.0.0.0 for all)' },
  advertise: { kind: 'string', help: 'address nodes use to reach this host (default: its first non-loopback IPv4)' },
  'tracker-port': { kind: 'int', min: 0, max: 65535, help: 'tracker HTTP port (0: any free port)' },
  'seeder-port': { kind: 'int', min: 0, max: 65535, help: 'seeder BitTorrent port (0: any free port)' },
  discovery: { kind: 'string', choices: DISCOVERY_MODES, help: 'how nodes find each other: tracker (the head\'s), dht (BEP 5, bootstrapped from the head alone: no tracker announces), or nodes (the launch\'s node list: Slurm\'s, or the hosts mpirun/mpiexec is given: no tracker, no DHT)' },
  'dht-port': { kind: 'int', min: 0, max: 65535, help: 'with --discovery dht, the head\'s DHT UDP port (0: any free port)' },
  'node-host': { kind: 'string', help: 'with --discovery nodes, where a node\'s agent is reached: a template of its name in the node list (%n), e.g. %n-ib for another network' },
  'node-port': { kind: 'int', min: 1, max: 65535, help: 'with --discovery nodes, the agents\' first port: the Kth node of the job listens on this plus K' },
  'tracker-max-peers': { kind: 'int', min: 1, help: 'peers the tracker remembers per swarm' },
  'tracker-announce-peers': { kind: 'int', min: 1, help: 'most peers the tracker returns per announce' },
  'upload-limit': { kind: 'int', min: 0, help: 'seeder upload cap in bytes/s, 0 for none (emulates a slow head link)' },
  'defer-to-peers': { kind: 'seconds', min: 0, help: 'the head sends a piece to one node at a time: for this many seconds, then until that node has it (10 s at most); others asking meanwhile get it from that node (0: off)' },
  'verify-source': { kind: 'bool', help: 'hash the whole source at seeder start even if sizes and mtimes match' },
  'store-dir': { kind: 'path', help: 'where a node keeps downloaded bytes (memory-backed by default)' },
  'max-conns': { kind: 'int', min: 1, help: 'most peer connections per node' },
  'head-max-conns': { kind: 'int', min: 1, help: 'most node connections the head\'s seeder keeps (every node dials it)' },
  numwant: { kind: 'int', min: 1, help: 'peers a node asks the tracker for, and dials of those it is told of while it has fewer connections' },
  'stall-timeout': { kind: 'seconds', min: 1, help: 'give up when no byte arrives for this many seconds' },
  fallback: { kind: 'string', choices: FALLBACK_MODES, help: 'when the swarm stalls, read what programs wait for from the source directory if this node can (auto), or fail (off)' },
  'start-timeout': { kind: 'seconds', min: 1, help: 'give up when a node agent is not ready after this many seconds' },
  'agent-linger': { kind: 'seconds', min: 0, help: 'after its launch, a node agent waits this many seconds for the same user\'s next launch on the node, and serves it without starting again (0: it leaves at once)' },
  'slurm-watch': { kind: 'seconds', min: 0.1, help: 'how often a --p2plibs job\'s head looks in Slurm\'s queue for its job (it stops when the job is gone)' },
  'follow-symlinks': { kind: 'bool', help: 'copy in the targets of absolute symlinks and of symlinks that leave a library directory (Spack views, conda)' },
  libs: { kind: 'paths', help: 'library directories for launches, separated by ":" (like --libs, repeatable); auto: what the program loads' },
  'libs-policy': { kind: 'string', choices: LIBS_POLICIES, help: 'with --libs auto, serve what lies on network file systems (network), that and all outside the system directories (nonsystem), or all but the loader (all)' },
  'description-route': { kind: 'string', choices: DESCRIPTION_ROUTES, help: 'how a launch\'s nodes get the description: spec, inside the job spec the launcher forwards (when it fits; else as peers); peers, from nodes that have it, the head answering the first few' },
  launcher: { kind: 'string', choices: ['auto', ...LAUNCHER_NAMES], help: `how ranks are started: auto, ${LAUNCHER_NAMES.join(', ')}` },
  agent: { kind: 'string', choices: AGENT_CHOICES, help: 'the node agent: native (p2prun-agent, no Node: peers from a tracker, seeders or a node list, no DHT), node (every option), or auto: native when it serves the options; the head\'s seeder is native unless this says node (or an upload limit asks for the Node one)' },
  mode: { kind: 'string', choices: DATA_MODES, help: 'data mode: block (fetch pieces on read), file (whole file on open), eager (everything, opened files first)' },
  owner: { kind: 'string', help: 'UID[:GID] that owns the mounted files (default: the mounting user)' },
  'allow-other': { kind: 'bool', help: 'let users other than the mounting one see the mount (needs user_allow_other in /etc/fuse.conf)' },
  'node-name': { kind: 'string', help: 'this node\'s name in mount points (%n) and messages (default: the host name)' },
  'run-dir': { kind: 'path', help: 'where mount agents keep their state and logs' },
  'fuse-device': { kind: 'path', help: 'the FUSE device a mount requires' },
  quiet: { kind: 'bool', help: 'print nothing but errors' }
} as const satisfies Record<string, Spec>

export type SettingName = keyof typeof SETTINGS

export interface Config {
  readonly host: string | undefined
  readonly advertise: string | undefined
  readonly trackerPort: number
  readonly seederPort: number
  readonly trackerMaxPeers: number
  readonly trackerAnnouncePeers: number
  readonly uploadLimit: number
  readonly deferToPeersMs: number
  readonly verifySource: boolean
  readonly storeDir: string
  readonly maxConns: number
  readonly headMaxConns: number
  readonly numwant: number
  readonly stallTimeoutMs: number
  readonly startTimeoutMs: number
  readonly agentLingerMs: number
  readonly slurmWatchMs: number
  readonly followSymlinks: boolean
  /** Directories (absolute) and AUTO_LIBS, in the order given. */
  readonly libs: readonly string[] | undefined
  readonly libsPolicy: LibsPolicy
  readonly launcher: LauncherChoice
  readonly descriptionRoute: DescriptionRoute
  readonly discovery: Discovery
  readonly dhtPort: number
  readonly nodeHost: string
  readonly nodePort: number
  readonly agent: AgentChoice
  readonly mode: DataMode
  readonly fallback: FallbackMode
  readonly owner: { readonly uid: number, readonly gid: number } | undefined
  readonly allowOther: boolean
  readonly nodeName: string
  readonly runDir: string
  readonly fuseDevice: string
  readonly quiet: boolean
}

const DEFAULTS: Config = {
  host: undefined,
  advertise: undefined,
  trackerPort: 0,
  seederPort: 0,
  trackerMaxPeers: 20_000,
  trackerAnnouncePeers: 200,
  uploadLimit: 0,
  deferToPeersMs: 2000,
  verifySource: false,
  storeDir: '/dev/shm',
  maxConns: 100,
  // Every node dials the head's seeder first; refused ones redial (1–4 s), which costs the head
  // CPU too; each kept connection costs it a socket and its buffers. Not the nodes' 100.
  headMaxConns: 1000,
  numwant: 8,
  stallTimeoutMs: 60_000,
  startTimeoutMs: 120_000,
  agentLingerMs: 0,
  slurmWatchMs: 10_000,
  followSymlinks: false,
  libs: undefined,
  libsPolicy: 'nonsystem',
  launcher: 'auto',
  descriptionRoute: 'spec',
  discovery: 'tracker',
  dhtPort: 0,
  nodeHost: '%n',
  nodePort: 6881,
  agent: 'auto',
  mode: 'eager',
  fallback: 'auto',
  owner: undefined,
  allowOther: false,
  nodeName: os.hostname(),
  runDir: defaultRunDir(process.getuid?.() ?? 0),
  fuseDevice: '/dev/fuse',
  quiet: false
}

/** A user's run directory unless set (Slurm's epilog, as root, looks in the job's user's). */
export function defaultRunDir (uid: number): string {
  return path.join(os.tmpdir(), `p2prun-run-${uid}`)
}

export interface ConfigSources {
  /** Flags given on the command line, by kebab-case name, as strings or booleans. */
  readonly flags: Partial<Record<SettingName, string | boolean>>
  readonly env: NodeJS.ProcessEnv
  readonly cwd: string
  /** --config FILE, if given. */
  readonly configFile?: string
}

/** The site's settings, below the user's: where an administrator sets the store, ports, policies. */
export const SITE_CONFIG_FILE = '/etc/p2prun/p2prun.yaml'

export async function loadConfig (sources: ConfigSources): Promise<Config> {
  const user = await loadYaml(sources.configFile ?? (sources.env.P2PRUN_CONFIG || undefined), 'p2prun.yaml', sources.cwd)
  const site = await loadYaml(sources.env.P2PRUN_SITE_CONFIG || undefined, SITE_CONFIG_FILE, sources.cwd)
  const out: Record<string, unknown> = { ...DEFAULTS }
  for (const name of Object.keys(SETTINGS) as SettingName[]) {
    const spec: Spec = SETTINGS[name]
    const envName = envNameOf(name)
    const flag = sources.flags[name]
    const envValue = sources.env[envName]
    let parsed: unknown
    let where: string
    const yaml = user.values[name] !== undefined ? user : site
    // Relative paths are relative to where they were written: the YAML file's directory, else cwd.
    if (flag !== undefined) parsed = parseValue(spec, flag, where = `--${name}`, sources.cwd)
    else if (envValue !== undefined && envValue !== '') parsed = parseValue(spec, envValue, where = envName, sources.cwd)
    else if (yaml.values[name] !== undefined) parsed = parseValue(spec, yaml.values[name], where = `${name} in ${yaml.file}`, path.dirname(yaml.file))
    else continue
    out[fieldOf(name)] = spec.kind === 'seconds' ? (parsed as number) * 1000 : name === 'owner' ? parseOwner(parsed as string, where) : parsed
  }
  return Object.freeze(out) as unknown as Config
}

export function envNameOf (name: SettingName): string {
  return `P2PRUN_${name.toUpperCase().replaceAll('-', '_')}`
}

function fieldOf (name: SettingName): keyof Config {
  if (SETTINGS[name].kind === 'seconds') return `${camel(name)}Ms` as keyof Config
  return camel(name) as keyof Config
}

function camel (name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
}

function parseOwner (raw: string, where: string): { uid: number, gid: number } {
  const m = raw.match(/^(\d+)(?::(\d+))?$/)
  if (!m) throw configError(`${where}: expected UID or UID:GID (numbers), got ${quote(raw)}`)
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) }
}

/** A settings file: `explicit` must exist; the default may be absent (no settings from it). */
async function loadYaml (explicit: string | undefined, defaultFile: string, cwd: string): Promise<{ file: string, values: Record<string, unknown> }> {
  const file = path.resolve(cwd, explicit ?? defaultFile)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if (explicit === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT') return { file, values: {} }
    throw configError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code}`, 'check the path given by --config, P2PRUN_CONFIG or P2PRUN_SITE_CONFIG')
  }
  let doc: unknown
  try {
    // Imported only when there is a file to parse: every node agent and rank step loads this module.
    const { parseYaml } = await import('./yaml.ts')
    doc = parseYaml(text)
  } catch (err) {
    throw configError(`${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, 'fix the file or remove it')
  }
  if (doc === null || doc === undefined) return { file, values: {} }
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw configError(`${file} must be a mapping of settings`, `for example "store-dir: /dev/shm"`)
  }
  for (const key of Object.keys(doc)) {
    if (!(key in SETTINGS)) {
      throw configError(`unknown setting ${quote(key)} in ${file}`, `known settings: ${Object.keys(SETTINGS).join(', ')}`)
    }
  }
  return { file, values: doc as Record<string, unknown> }
}

function parseValue (spec: Spec, raw: unknown, where: string, base: string): unknown {
  switch (spec.kind) {
    case 'bool': {
      if (typeof raw === 'boolean') return raw
      const s = String(raw).toLowerCase()
      if (['1', 'true', 'yes', 'on'].includes(s)) return true
      if (['0', 'false', 'no', 'off'].includes(s)) return false
      throw configError(`${where}: expected true or false, got ${quote(String(raw))}`)
    }
    case 'int':
    case 'seconds': {
      const n = typeof raw === 'number' ? raw : Number(String(raw).trim())
      const whole = spec.kind === 'int'
      if (String(raw).trim() === '' || !Number.isFinite(n) || (whole && !Number.isInteger(n))) {
        throw configError(`${where}: expected ${whole ? 'a whole number' : 'a number of seconds'}, got ${quote(String(raw))}`)
      }
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        throw configError(`${where}: ${n} is out of range (${spec.min ?? '-∞'}..${spec.max ?? '∞'})`)
      }
      return n
    }
    case 'paths': {
      // YAML may give a list; flags and variables give one string, separated by ":".
      const items = Array.isArray(raw) ? raw.map(String) : typeof raw === 'string' ? raw.split(':') : undefined
      const list = items?.filter((item) => item !== '')
      if (!list || list.length === 0) throw configError(`${where}: expected directories separated by ":", got ${quote(String(raw))}`)
      return list.map((item) => (item === AUTO_LIBS ? item : path.resolve(base, item)))
    }
    case 'path':
    case 'string': {
      if (typeof raw !== 'string' || raw === '') throw configError(`${where}: expected a non-empty string`)
      if (spec.choices && !spec.choices.includes(raw)) {
        throw configError(`${where}: expected one of ${spec.choices.join(', ')}, got ${quote(raw)}`)
      }
      return spec.kind === 'path' ? path.resolve(base, raw) : raw
    }
  }
}
