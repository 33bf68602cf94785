// Every number the model runs on, with where it comes from (bench/model/README.md has the table).
// Times in seconds, rates in bytes per second. "fitted" parameters are set by calibrate.ts against
// bench/README.md's rows; "measured" ones are read off bench/README.md; "assumed" ones are not
// measured anywhere and are the first suspects when the model is wrong.
import { HEAD_DESC_PEERS, NODE_DESC_PEERS } from '../../lib/swarm/description-exchange.ts'
import { rateBits } from '../plot.ts'

export interface Params {
  readonly nodes: number
  /** Link rate of every node and of the head, each direction (tc tbf per link in the emulation). */
  readonly rate: number
  /** One-way latency per message (the emulation has no netem: a veth hop). Assumed. */
  readonly latency: number
  /**
   * The share of a link's rate that carries payload: TCP/IP and Ethernet headers go through the
   * same shaper. Measured on the emulated cluster (bench/README.md, 2026-12-02 15:38): one TCP
   * stream through a 100 Mbit/s tbf link moved 50 MB at 96.7 Mbit/s (3 runs), two into one node 95.1.
   */
  readonly linkGoodput: number
  /**
   * CPU: 'shared' = every agent, program and the head on one pool of `sharedCores` (the 2-core VM
   * that runs the emulated cluster); 'own' = each node and the head on their own core(s).
   */
  readonly sharedCores: number
  readonly coresPerNode: number
  /**
   * 'bench': agents are given the description file (bench/run.ts); 'launch': they fetch it from
   * peers first (with `discovery: 'nodes'`, as 'bench': the launcher's job spec carries it).
   */
  readonly mode: 'bench' | 'launch'
  /** Nodes start uniformly within this many seconds (the launcher's own spread). Assumed 0. */
  readonly startSpread: number
  /**
   * How nodes find each other: the head's tracker, or (`--discovery dht`) a DHT of the job's nodes
   * bootstrapped from the head, with no tracker announce at all (lib/swarm/dht.ts), or (`--discovery
   * nodes`) the job's node list: each node dials the peers lib/swarm/node-list.ts picks for it, and
   * only a few dial the head at start (the rest when a wait makes no progress: headFallback).
   */
  readonly discovery: 'tracker' | 'dht' | 'nodes'
  readonly seed: number

  // The node agent (bench/README.md: whole-life agent CPU, agent start CPU): AGENT_COSTS below, by agent.
  /** CPU until the mount is up. The Node agent (Node, the CLI, joining, mounting): 0.26–0.30 s (row medians) in the calibration matrix of 2026-12-03 (e59b234, this VM); the native agent 0.01 s. */
  readonly agentStartCpu: number
  /** Wall time of the start beyond its CPU (exec, page faults, mount): measured 0.19–0.20 s wall against 0.15–0.16 CPU at 2 nodes. */
  readonly agentStartWait: number
  /** CPU per piece received: parse, assemble, SHA-1, pwrite, picker. Fitted (with pieceSendCpu = half of it). */
  readonly pieceRecvCpu: number
  /**
   * CPU per second of a piece's arrival at the link's payload rate, on top of pieceRecvCpu: on a
   * slow link the agent wakes for each small batch of a piece's packets, on a fast one it reads the
   * piece in a few large reads. Fitted on the 8-node rows at 100 Mbit/s and 1 Gbit/s, whose agents
   * moved the same bytes for different CPU (the Node agent 1.11 and 0.86 CPU-s, 2026-12-03).
   */
  readonly trickleCpu: number
  /** CPU per piece served to a peer: pread and the socket write. Assumed half of pieceRecvCpu. */
  readonly pieceSendCpu: number
  /** CPU per small message sent or received (have, request, reject). Assumed (bounded by the bench: see README). */
  readonly messageCpu: number
  /** CPU of the program (the driver: ld.so, its FUSE calls' kernel side) on a node. The Node agent's fit assumed 0.05 s; the bench has measured it since 2026-12-04 (0.09–0.11 s beside the native agent). */
  readonly programCpu: number
  /** Emulation only: CPU of the emulated network (veth, bridge, tbf softirq) per piece moved, on the shared cores. Fitted. */
  readonly emulationCpuPerPiece: number

  // Head (tracker + seeder, one Node process).
  /** Head CPU per piece sent: read from the page cache, SHA-1, send. Measured-ish: 0.40 s for 743 pieces at 8 nodes (morning run). */
  readonly headPieceCpu: number
  /** Head CPU per node connection: handshake with the job proof, bitfield, interest. Assumed. */
  readonly headConnCpu: number
  /** Head CPU per registration (first announce), at 16k peers. Measured 0.26–0.28 ms (tracker-load.ts). */
  readonly trackerRegisterCpu: number
  /** Head CPU per other announce (re-announce, completed, peek). Measured 0.17–0.21 ms. */
  readonly trackerAnnounceCpu: number
  /**
   * CPU of a DHT node per query it answers (bittorrent-dht: KRPC over UDP, bencode both ways, its
   * routing table, a token). Measured: bench/dht-load.ts at 16,000 nodes, the head's DHT node,
   * 0.067–0.072 ms per announce_peer and 0.076–0.077 ms per get_peers (two runs).
   */
  readonly dhtQueryCpu: number
  /** The DHT nodes nearest the infohash, which answer every node's get_peers and take its announce_peer (BEP 5's K). */
  readonly dhtNearest: number
  /** Head CPU to accept and drop a connection over its cap. Assumed. */
  readonly headRefuseCpu: number
  /** CPU (both ends) and wall time to hand over the description (27 KB) over a fresh connection. Assumed. */
  readonly descCpu: number
  readonly descBytes: number

  // Policy (lib/config.ts, lib/swarm/*.ts: the code's constants).
  readonly maxConns: number
  readonly headMaxConns: number
  readonly numwant: number
  /**
   * The head holds a piece for the node it sent it to for at least deferToPeers, then until that
   * node has it, at most headConfirmMax (lib/swarm/seeder.ts: FanOut(1, deferToPeersMs,
   * CONFIRM_WAIT_MAX_MS)): other askers are turned down meanwhile.
   */
  readonly deferToPeers: number
  readonly headConfirmMax: number
  readonly headBackoff: number
  /**
   * With a node list, a node that did not dial the head at start dials it once it has waited this
   * long with no piece verified (lib/swarm/node.ts: HEAD_FALLBACK_MS, checked every second).
   */
  readonly headFallback: number
  /** Redials of a listed peer not up yet before it is given up: dialed 1 + this many times (lib/swarm/connections.ts: REDIAL_TRIES). */
  readonly peerRedialTries: number
  /** Pieces in flight per peer: 96 KiB of 64 KiB requests = 2; reads may take 128 KiB more = 4. */
  readonly pipeline: number
  readonly readPipeline: number
  readonly headDescPeers: number
  readonly nodeDescPeers: number
  readonly descPeek: number
  readonly descRetry: number
  readonly descRetryMax: number
  readonly descDeadline: number
  /** How far the model's picker looks down a want list per pick (the code looks at all of it). */
  readonly scan: number
}

/** The parameters measured or fitted per node agent: its own costs, and the emulated network's CPU per piece fitted beside them. */
export type AgentCosts = Pick<Params, 'agentStartCpu' | 'agentStartWait' | 'pieceRecvCpu' | 'pieceSendCpu' | 'trickleCpu' | 'programCpu' | 'emulationCpuPerPiece'>
export type AgentKind = 'native' | 'node'

/**
 * node: the Node agent's fit to the calibration matrix of 2026-12-03 (calibrate.ts --agent node).
 * native: the native agent (dist/p2prun-agent, p2prun's default), fitted to the rows of 2026-12-05
 * 10:24 (calibrate.ts --agent native --fit; FUSE passthrough, the bench's clock without its own
 * forks, which the emulation's cost per piece had absorbed: 0.138 ms before); its start (0.01
 * CPU-s) and its program's CPU (0.085 s, the bench's "program CPU" median) measured.
 */
export const AGENT_COSTS: Record<AgentKind, AgentCosts> = {
  node: {
    agentStartCpu: 0.28,
    agentStartWait: 0.04,
    pieceRecvCpu: 0.517e-3,
    pieceSendCpu: 0.258e-3,
    trickleCpu: 0.0681,
    programCpu: 0.05,
    emulationCpuPerPiece: 0.369e-3
  },
  native: {
    agentStartCpu: 0.01,
    agentStartWait: 0.04,
    pieceRecvCpu: 0.168e-3,
    pieceSendCpu: 0.084e-3,
    trickleCpu: 0.0106,
    programCpu: 0.085,
    emulationCpuPerPiece: 0.056e-3
  }
}

export const DEFAULTS: Omit<Params, 'nodes' | 'rate'> = {
  latency: 50e-6,
  linkGoodput: 0.967,
  sharedCores: 0,
  coresPerNode: 1,
  mode: 'launch',
  startSpread: 0,
  discovery: 'tracker',
  seed: 1,
  ...AGENT_COSTS.native,
  messageCpu: 1e-6,
  headPieceCpu: 0.5e-3,
  headConnCpu: 1e-3,
  trackerRegisterCpu: 0.174e-3,
  trackerAnnounceCpu: 0.086e-3,
  dhtQueryCpu: 0.075e-3,
  dhtNearest: 8,
  headRefuseCpu: 50e-6,
  descCpu: 1e-3,
  descBytes: 27_000,
  maxConns: 100,
  headMaxConns: 1000,
  numwant: 8,
  deferToPeers: 2,
  headConfirmMax: 10,
  headBackoff: 0.25,
  headFallback: 3,
  peerRedialTries: 5,
  pipeline: 2,
  readPipeline: 4,
  headDescPeers: HEAD_DESC_PEERS,
  nodeDescPeers: NODE_DESC_PEERS,
  descPeek: 20,
  descRetry: 0.15,
  descRetryMax: 2,
  descDeadline: 10,
  scan: 64
}

/** `100mbit`, `1gbit`, `10gbit` → bytes per second. */
export function parseRate (rate: string): number {
  return rateBits(rate) / 8
}
