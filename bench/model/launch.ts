// One launch, simulated piece by piece: N node agents start, get the description (launch mode),
// register with the head's tracker, connect to the head's seeder and to the peers the tracker
// lists, and fetch the set with the piece picker's policy while each node's program opens its
// libraries one after another; the head serves a piece to one node at a time (defer-to-peers).
// With a DHT, the nodes look each other up instead of registering; with the job's node list, each
// dials the peers the list gives it, and only a few dial the head until a wait makes no progress.
//
// What a transfer is: a request reaches the serving peer after the link latency, waits for that
// peer's CPU (first come, first served: its event loop), then for its uplink, which sends pieces
// first come, first served at the link rate; a request a program waits on (a read) is instead
// charged the time a fair share of the link would take (TCP shares the link among connections,
// and a read has at most a piece or two queued ahead of it on its own connection). The piece then
// waits for the receiver's CPU (assembly, SHA-1, store), and only then is it verified, announced
// (`have` to every connected peer that lacks it) and its request slot free. Downlinks are not a
// separate bottleneck: links are symmetric, and every uplink's flows are spread over the swarm.
import { dialsHead, listedPeers } from '../../lib/swarm/node-list.ts'
import { Cpus } from './cpu.ts'
import { EventQueue } from './heap.ts'
import type { Params } from './params.ts'
import type { LibrarySet } from './set.ts'

const HEAD = 0
/** Edge index standing for "the head" in events (a node's neighbours are 0..deg-1). */
const VIA_HEAD = -1

const E = {
  Slice: 0, Started: 1, PeekAgain: 2, PeekReply: 3, DescDone: 4, Registered: 5, Arrive: 6,
  Verified: 7, Reject: 8, Wake: 9, Tick: 10, Redial: 11, Dial: 12
} as const
/** What a sliced long job does when its last slice ends. */
const JOB_START = 0
const JOB_PROGRAM = 1
/** The picker re-runs every second (lib/swarm/node.ts: STALL_CHECK_MS). */
const TICK = 1
const REDIAL_FIRST = 1
const REDIAL_MAX = 4
/** A program's phases: starting the agent, opening libraries one by one, relocating, done. */
const PHASE_START = 0
const PHASE_OPEN = 1
const PHASE_RELOCATE = 2
const PHASE_DONE = 3

export interface LaunchResult {
  readonly nodes: number
  /** Time (s) from the common start until each node's program was done, sorted. */
  readonly finish: Float64Array
  readonly makespan: number
  readonly median: number
  readonly p99: number
  /** Bytes of the set the head sent, and the description copies it handed out. */
  readonly headBytes: number
  readonly headDescCopies: number
  readonly headCpu: number
  /** Agent CPU over its whole life (until the last program was done): the median. */
  readonly agentCpuMedian: number
  /** When the last node registered with the tracker, announced in the DHT, or dialed its listed peers. */
  readonly lastRegistered: number
  readonly degreeMin: number
  readonly headConns: number
  readonly events: number
}

/** A small seeded generator (mulberry32): runs are reproducible. */
function random (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Set bits in a 32-bit word. */
function bitCount (x: number): number {
  x -= (x >>> 1) & 0x55555555
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333)
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24
}

/** 4 bytes of a pretend infohash, from the seed (a generator of their own: the run's draws are not touched). */
function seedBytes (seed: number): Uint8Array {
  const x = Math.floor(random(seed ^ 0x5eed)() * 2 ** 32)
  return Uint8Array.of(x >>> 24, (x >>> 16) & 255, (x >>> 8) & 255, x & 255)
}

const quantile = (sorted: Float64Array | Int32Array, q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number

export function simulateLaunch (prm: Params, set: LibrarySet): LaunchResult {
  return new Launch(prm, set).run()
}

class Launch {
  private readonly p: Params
  private readonly set: LibrarySet
  private readonly n: number
  private readonly pieces: number
  private readonly m: number
  private readonly rnd: () => number
  private readonly q = new EventQueue()
  private readonly cpus: Cpus
  /** CPU per piece received: pieceRecvCpu, and trickleCpu for the time a piece takes to arrive at the link rate. */
  private readonly recvCpu: number
  private now = 0

  // What each node has and has asked for, as bits (32 a word): most of the model's time goes into
  // reading them, and bits keep what it reads in cache (at 16,000 nodes a byte per node × piece
  // would be 12 MB an array). Per node × piece (row 0 is the head, which has everything): has it,
  // and needs it (lacks it, not asked for: a piece neither had nor needed is in flight); a peer's
  // `hasBits` and a node's `needBits` give every piece the node could ask that peer for.
  private readonly pieceWords: number
  private readonly hasBits: Int32Array
  private readonly needBits: Int32Array
  // The same per piece × node (a row of all nodes per piece), for the walks over a node's peers
  // on every `have`: has it, and has it or asked for it (busy).
  private readonly nodeWords: number
  private readonly hasByPiece: Int32Array
  private readonly busyByPiece: Int32Array
  /** The pieces the program reads (set.touched), as bits. */
  private readonly touchedBits: Int32Array
  /** Scratch for firstInOrder: the pieces a peer could give. */
  private readonly could: Int32Array
  /** Until when the head is not asked for the piece again (it turned it down). */
  private readonly backoff: Float32Array
  /**
   * Each node's missing pieces in an order of its own (random: the background fetch), kept compact
   * (a verified piece's place takes the last one's) so a pick never walks past pieces it has.
   */
  private readonly order: Uint16Array
  private readonly orderAt: Uint16Array
  private readonly missing: Int32Array

  // Connections: neighbours, the requests in flight on each, and the index of the reverse edge.
  private readonly adj: Int32Array
  private readonly rev: Int32Array
  private readonly slots: Uint8Array
  /** The same seen from the other end: at d's edge to v, v's requests in flight to d (the walk on every `have` reads it in order). */
  private readonly peerSlots: Uint8Array
  private readonly deg: Int32Array
  private readonly headConn: Uint8Array
  private readonly headSlots: Uint8Array
  private headConns = 0

  // Per node.
  private readonly haveCount: Int32Array
  private readonly inflightCount: Int32Array
  private readonly phase: Uint8Array
  private readonly opened: Int32Array
  private readonly fileEnd: Int32Array
  private readonly fileCursor: Int32Array
  private readonly touchCursor: Int32Array
  private readonly programCpuDone: Uint8Array
  private readonly doneAt: Float64Array
  private readonly descStart: Float64Array
  private readonly descServed: Int32Array
  private readonly upFree: Float64Array
  /** Connections with a request in flight at each uplink: a read gets a fair share of the link. */
  private readonly flows: Int32Array
  /** Where each node's walk over its connections starts: the code walks them in a random order at each turn (lib/swarm/picker.ts); here a random start per node. */
  private readonly firstPeer: Int32Array

  // The head.
  private readonly sentTo: Int32Array
  private readonly sentAt: Float64Array
  private headBytes = 0
  private headDescCopies = 0
  /** Registered nodes (announced, in the DHT), in order: the random samples of peers are drawn from them. */
  private readonly registered: Int32Array
  /** The DHT nodes nearest the infohash (--discovery dht): random nodes, as node ids are. */
  private readonly nearest: Int32Array
  /** Round trips of a DHT lookup before it reaches the nearest nodes: log base 8 of N (assumed: each round finds nodes about 8 times nearer). */
  private readonly dhtRounds: number
  private registeredCount = 0
  /** When the last node registered (tracker), announced (DHT), or dialed its listed peers (node list). */
  private lastRegistered = 0
  /** Whether a node fetches the description from peers before it joins: launch mode, unless the job spec carries it (node list). */
  private readonly fetchesDescription: boolean
  /** The infohash's first 4 bytes, from which the node list draws each node's random peers. */
  private readonly listSeed: Uint8Array
  /** Node list: 1 for a node that did not dial the head at start and has not yet (it will once a wait makes no progress). */
  private readonly laterHead: Uint8Array
  /** When each node last verified a piece, or joined: its wait's progress (lib/swarm/node.ts: lastProgress). */
  private readonly lastProgress: Float64Array
  private done = 0

  constructor (prm: Params, set: LibrarySet) {
    this.p = prm
    this.set = set
    this.n = prm.nodes
    this.pieces = set.pieceCount
    this.m = Math.min(prm.maxConns, prm.nodes)
    this.rnd = random(prm.seed)
    this.cpus = new Cpus(this.n, prm.sharedCores, prm.coresPerNode)
    this.recvCpu = prm.pieceRecvCpu + prm.trickleCpu * set.pieceLength / (prm.rate * prm.linkGoodput)
    const rows = (this.n + 1) * this.pieces
    this.nodeWords = (this.n + 1 + 31) >> 5
    this.hasByPiece = new Int32Array(this.pieces * this.nodeWords)
    this.busyByPiece = new Int32Array(this.pieces * this.nodeWords)
    for (let p = 0; p < this.pieces; p++) {
      this.hasByPiece[p * this.nodeWords] = 1
      this.busyByPiece[p * this.nodeWords] = 1
    }
    this.pieceWords = (this.pieces + 31) >> 5
    this.hasBits = new Int32Array((this.n + 1) * this.pieceWords)
    this.needBits = new Int32Array((this.n + 1) * this.pieceWords)
    for (let q = 0; q < this.pieces; q++) this.hasBits[q >> 5] |= 1 << (q & 31)
    for (let d = 1; d <= this.n; d++) this.needBits.set(this.hasBits.subarray(0, this.pieceWords), d * this.pieceWords)
    this.touchedBits = new Int32Array(this.pieceWords)
    this.could = new Int32Array(this.pieceWords)
    for (const q of set.touched) this.touchedBits[q >> 5] |= 1 << (q & 31)
    this.backoff = new Float32Array(rows)
    this.order = new Uint16Array(rows)
    this.orderAt = new Uint16Array(rows)
    const edges = (this.n + 1) * this.m
    this.adj = new Int32Array(edges)
    this.rev = new Int32Array(edges)
    this.slots = new Uint8Array(edges)
    this.peerSlots = new Uint8Array(edges)
    this.deg = new Int32Array(this.n + 1)
    this.headConn = new Uint8Array(this.n + 1)
    this.headSlots = new Uint8Array(this.n + 1)
    this.haveCount = new Int32Array(this.n + 1)
    this.inflightCount = new Int32Array(this.n + 1)
    this.phase = new Uint8Array(this.n + 1)
    this.opened = new Int32Array(this.n + 1)
    this.fileEnd = new Int32Array(this.n + 1)
    this.fileCursor = new Int32Array(this.n + 1)
    this.missing = new Int32Array(this.n + 1)
    this.touchCursor = new Int32Array(this.n + 1)
    this.programCpuDone = new Uint8Array(this.n + 1)
    this.doneAt = new Float64Array(this.n + 1)
    this.descStart = new Float64Array(this.n + 1)
    this.descServed = new Int32Array(this.n + 1)
    this.upFree = new Float64Array(this.n + 1)
    this.flows = new Int32Array(this.n + 1)
    this.firstPeer = new Int32Array(this.n + 1)
    this.sentTo = new Int32Array(this.pieces).fill(-1)
    this.sentAt = new Float64Array(this.pieces)
    this.registered = new Int32Array(this.n)
    // Drawn only for a DHT: the tracker's runs keep their random sequence.
    this.nearest = new Int32Array(prm.discovery === 'dht' ? Math.min(prm.dhtNearest, this.n) : 0)
    for (let k = 0; k < this.nearest.length; k++) {
      let v: number
      do v = 1 + Math.floor(this.rnd() * this.n)
      while (this.nearest.subarray(0, k).includes(v))
      this.nearest[k] = v
    }
    this.dhtRounds = Math.max(1, Math.ceil(Math.log(this.n) / Math.log(8)))
    this.fetchesDescription = prm.mode === 'launch' && prm.discovery !== 'nodes'
    this.listSeed = seedBytes(prm.seed)
    this.laterHead = new Uint8Array(this.n + 1)
    this.lastProgress = new Float64Array(this.n + 1)
  }

  run (): LaunchResult {
    for (let d = 1; d <= this.n; d++) {
      this.shuffleOrder(d)
      this.firstPeer[d] = Math.floor(this.rnd() * this.m)
      const at = this.p.startSpread * this.rnd()
      this.runSliced(d, at, this.p.agentStartCpu, JOB_START)
    }
    const ev = new Float64Array(5)
    while (this.done < this.n && this.q.pop(ev)) {
      this.now = ev[0] as number
      this.dispatch(ev[1] as number, ev[2] as number, ev[3] as number, ev[4] as number)
    }
    return this.result()
  }

  private dispatch (kind: number, a: number, b: number, c: number): void {
    switch (kind) {
      case E.Slice: return this.runSliced(a, this.now, b / 1e6, c)
      case E.Started: return this.fetchesDescription ? this.peek(a) : this.join(a)
      case E.PeekAgain: return this.peek(a, b)
      case E.PeekReply: return this.fetchDescription(a, b)
      case E.DescDone: return this.join(a)
      case E.Registered: return this.registeredReply(a)
      case E.Arrive: return this.arrive(a, b, c)
      case E.Verified: return this.verified(a, b, c)
      case E.Reject: return this.rejected(a, b)
      case E.Wake: return this.fill(a, VIA_HEAD)
      case E.Tick: return this.tick(a)
      case E.Redial: return this.dialHead(a, b)
      case E.Dial: return this.dial(a, b, c)
    }
  }

  /** Runs a long job (an agent's start, a program) in slices on shared cores, whole on own ones. */
  private runSliced (d: number, at: number, left: number, job: number): void {
    if (left <= 0) return this.jobDone(d, job)
    const slice = Math.min(left, this.cpus.slice)
    const end = job === JOB_PROGRAM ? this.cpus.runProgram(d, at, slice) : this.cpus.run(d, at, slice)
    // The queue holds integers: what is left of the job goes in microseconds.
    this.q.push(end, E.Slice, d, Math.round((left - slice) * 1e6), job)
  }

  private jobDone (d: number, job: number): void {
    if (job === JOB_START) {
      this.q.push(this.now + this.p.agentStartWait, E.Started, d)
      return
    }
    this.programCpuDone[d] = 1
    this.checkProgram(d)
  }

  // --- The description (launch mode): from peers the tracker lists, the head's first few copies, or HTTP after 10 s.

  private peek (d: number, round = 0): void {
    if (round === 0) this.descStart[d] = this.now
    const at = this.cpus.run(HEAD, this.now + this.p.latency, this.p.trackerAnnounceCpu) + this.p.latency
    this.q.push(at, E.PeekReply, d, round)
  }

  private fetchDescription (d: number, round: number): void {
    const attempt = 4 * this.p.latency + this.p.descCpu
    const transfer = this.p.descBytes / (this.p.rate * this.p.linkGoodput)
    const listed = Math.min(this.p.descPeek, this.registeredCount)
    for (let tries = 1; tries <= listed; tries++) {
      const v = this.registered[Math.floor(this.rnd() * this.registeredCount)] as number
      if ((this.descServed[v] as number) >= this.p.nodeDescPeers) continue
      this.descServed[v]++
      this.cpus.run(v, this.now, this.p.descCpu)
      this.q.push(this.now + tries * attempt + transfer, E.DescDone, d)
      return
    }
    const late = this.now - (this.descStart[d] as number) >= this.p.descDeadline
    if (this.descServed[HEAD] as number < this.p.headDescPeers || late) {
      // The head last, and only its first copies; past the deadline, the HTTP fallback.
      this.descServed[HEAD]++
      this.headDescCopies++
      const at = this.cpus.run(HEAD, this.now + this.p.latency, this.p.descCpu)
      this.q.push(at + attempt + transfer, E.DescDone, d)
      return
    }
    const wait = Math.min(this.p.descRetry * 2 ** round, this.p.descRetryMax) * (0.5 + this.rnd())
    this.q.push(this.now + wait, E.PeekAgain, d, round + 1)
  }

  // --- Joining: register with the tracker, dial the head's seeder, mount, start the program.

  private join (d: number): void {
    this.lastProgress[d] = this.now
    if (this.p.discovery === 'nodes') {
      this.dialListed(d)
    } else if (this.p.discovery === 'dht') {
      this.dhtLookup(d)
    } else {
      const at = this.cpus.run(HEAD, this.now + this.p.latency, this.p.trackerRegisterCpu) + this.p.latency
      this.q.push(at, E.Registered, d)
    }
    if (this.p.discovery !== 'nodes' || dialsHead(this.n, d - 1)) this.dialHead(d, 0)
    else this.laterHead[d] = 1
    this.phase[d] = PHASE_OPEN
    this.runSliced(d, this.now, this.p.programCpu, JOB_PROGRAM)
    this.openLibraries(d)
    this.q.push(this.now + TICK, E.Tick, d)
  }

  /**
   * A DHT lookup and announce (--discovery dht): the head's DHT node answers the node's first query
   * (the bootstrap), rounds of queries to other nodes lead to the nodes nearest the infohash, and
   * each of those answers a get_peers and takes an announce_peer, first come first served on its
   * own core (an agent's). The reply lists nodes announced so far, as the tracker's does. Not
   * modelled: the intermediate rounds' CPU (one query per node reached), lost UDP, re-lookups (a
   * lookup that found no one is made again after the announce: one get_peers more per node that
   * looked before anyone had announced).
   */
  private dhtLookup (d: number): void {
    const q = this.p.dhtQueryCpu
    const reached = this.cpus.run(HEAD, this.now + this.p.latency, q) + this.p.latency + this.dhtRounds * 2 * this.p.latency
    let reply = reached
    for (const v of this.nearest) {
      if (v !== d) reply = Math.max(reply, this.cpus.run(v, reached + this.p.latency, 2 * q) + this.p.latency)
    }
    this.q.push(reply, E.Registered, d)
  }

  /**
   * The node list (--discovery nodes): node d (list index d − 1) dials the peers listedPeers picks
   * for it; each dial reaches its peer a latency later. No tracker, no DHT: the head does no work.
   */
  private dialListed (d: number): void {
    this.lastRegistered = this.now
    for (const index of listedPeers(this.n, d - 1, this.listSeed)) this.q.push(this.now + this.p.latency, E.Dial, d, index + 1, 0)
  }

  /**
   * A dial of d to its listed peer v, after `failures` failed ones: it connects if v's agent is up
   * (listening: it has joined); if not, it is refused and d dials again after 1 s × 2^(failures − 1),
   * at most 4 s, jittered × (0.5 + random), and gives the address up after peerRedialTries more
   * (lib/swarm/connections.ts: redial).
   */
  private dial (d: number, v: number, failures: number): void {
    if (this.phase[v] !== PHASE_START) return this.connect(d, v)
    if (++failures > this.p.peerRedialTries) return
    const wait = Math.min(REDIAL_FIRST * 2 ** (failures - 1), REDIAL_MAX) * (0.5 + this.rnd())
    this.q.push(this.now + wait, E.Dial, d, v, failures)
  }

  private dialHead (d: number, tries: number): void {
    if (this.done >= this.n) return
    if (this.headConns < this.p.headMaxConns) {
      this.headConns++
      this.headConn[d] = 1
      this.cpus.run(HEAD, this.now + this.p.latency, this.p.headConnCpu)
      this.fill(d, VIA_HEAD)
      return
    }
    // Refused (over its cap): dialed again, with backoff, until the end (the seeder is persistent).
    this.cpus.run(HEAD, this.now + this.p.latency, this.p.headRefuseCpu)
    const wait = Math.min(REDIAL_FIRST * 2 ** tries, REDIAL_MAX) * (0.5 + this.rnd())
    this.q.push(this.now + wait, E.Redial, d, tries + 1)
  }

  /**
   * The tracker's reply: up to numwant random registered nodes, dialed (both ends under their cap)
   * while the node has fewer than numwant connections (native/agent/main.c dial_compact), from a
   * random place in the list.
   */
  private registeredReply (d: number): void {
    const others = this.registeredCount
    this.registered[this.registeredCount++] = d
    this.lastRegistered = this.now
    const want = Math.min(this.p.numwant, others)
    const from = Math.floor(this.rnd() * others)
    for (let i = 0; i < want && (this.deg[d] as number) < this.p.numwant; i++) {
      this.connect(d, this.registered[want === others ? (from + i) % others : Math.floor(this.rnd() * others)] as number)
    }
  }

  private connect (d: number, v: number): void {
    const m = this.m
    if (this.deg[d] as number >= m || this.deg[v] as number >= m) return
    for (let i = 0; i < (this.deg[d] as number); i++) if (this.adj[d * m + i] === v) return
    const i = this.deg[d]++ as number
    const j = this.deg[v]++ as number
    this.adj[d * m + i] = v
    this.adj[v * m + j] = d
    this.rev[d * m + i] = j
    this.rev[v * m + j] = i
    this.cpus.run(d, this.now, 2 * this.p.messageCpu)
    this.cpus.run(v, this.now, 2 * this.p.messageCpu)
    this.fill(d, i)
    this.fill(v, j)
  }

  // --- The program: opens libraries in order (each open waits for the library's header), then relocates.

  private openLibraries (d: number): void {
    const { headers, ends } = this.set
    const from = this.fileEnd[d] as number
    while (this.phase[d] === PHASE_OPEN) {
      const k = this.opened[d] as number
      this.fileEnd[d] = ends[k] as number
      if (!this.hasPiece(d, headers[k] as number)) break
      this.opened[d] = k + 1
      if (k + 1 === headers.length) this.phase[d] = PHASE_RELOCATE
    }
    // What became wanted: the files just opened (their pieces go to the front), or every piece the program reads.
    if (this.phase[d] === PHASE_RELOCATE) {
      this.askAround(d, 0, this.pieces, this.touchedBits)
      this.checkProgram(d)
    } else {
      this.askAround(d, from, this.fileEnd[d] as number)
    }
  }

  private checkProgram (d: number): void {
    if (this.phase[d] !== PHASE_RELOCATE) return
    const touched = this.set.touched
    let c = this.touchCursor[d] as number
    while (c < touched.length && this.hasPiece(d, touched[c] as number)) c++
    this.touchCursor[d] = c
    if (c < touched.length || !this.programCpuDone[d]) return
    this.phase[d] = PHASE_DONE
    this.doneAt[d] = this.now
    this.done++
  }

  /**
   * New wants (the pieces from..to, only those in `mask` if given): fill the free request slots of
   * the peers that hold any of them that d lacks, and of the head.
   */
  private askAround (d: number, from: number, to: number, mask?: Int32Array): void {
    const m = this.m
    const deg = this.deg[d] as number
    for (let k = 0; k < deg; k++) {
      const i = ((this.firstPeer[d] as number) + k) % deg
      if (this.slots[d * m + i] as number >= this.p.readPipeline) continue
      if (this.holdsAny(this.adj[d * m + i] as number, d, false, from, to, mask)) this.fill(d, i)
    }
    this.fill(d, VIA_HEAD)
  }

  /**
   * Whether v holds a piece from..to (in `mask` if given) that d lacks, or (`needed`) that d lacks
   * and has not asked anyone for: 32 pieces at a time.
   */
  private holdsAny (v: number, d: number, needed: boolean, from: number, to: number, mask?: Int32Array): boolean {
    if (from >= to) return false
    const W = this.pieceWords
    const hasBits = this.hasBits
    const first = from >> 5
    const last = (to - 1) >> 5
    for (let w = first; w <= last; w++) {
      let x = (hasBits[v * W + w] as number) & (needed ? this.needBits[d * W + w] as number : ~(hasBits[d * W + w] as number))
      if (mask) x &= mask[w] as number
      if (w === first) x &= -1 << (from & 31)
      if (w === last && (to & 31) !== 0) x &= (1 << (to & 31)) - 1
      if (x !== 0) return true
    }
    return false
  }

  // --- The picker (lib/swarm/picker.ts): reads, then opened files in order, then the background; the head only for what no peer holds.

  private fill (d: number, i: number): void {
    if (this.phase[d] === PHASE_START) return
    const viaHead = i === VIA_HEAD
    if (viaHead && !this.headConn[d]) return
    const u = viaHead ? HEAD : this.adj[d * this.m + i] as number
    for (;;) {
      const used = viaHead ? this.headSlots[d] as number : this.slots[d * this.m + i] as number
      const pick = this.pick(d, u, used)
      if (pick < 0) return
      this.request(d, i, u, pick >> 1, (pick & 1) === 1)
    }
  }

  /**
   * The next piece to ask `u` for, as piece × 2 + (1 if a program waits on it), or -1. Unlike the
   * code, the background is not held back while a read waits: the code tops every pipeline up
   * between reads (the picker runs before the program's next read reaches the agent), so they stay
   * about full; a read is instead charged a fair share of the link (see request).
   *
   * Most picks from a peer find nothing (it holds nothing d still needs): the bits rule those out
   * before the walks, which then run only where they may find a piece, and find the same one.
   */
  private pick (d: number, u: number, used: number): number {
    const P = this.pieces
    const base = d * P
    const limit = this.p.scan
    if (used >= this.p.readPipeline) return -1
    const fromPeer = u !== HEAD
    const phase = this.phase[d] as number
    if (phase === PHASE_OPEN) {
      const h = this.set.headers[this.opened[d] as number] as number
      if (this.needs(d, h) && this.can(d, u, h)) return h * 2 + 1
    } else if (phase === PHASE_RELOCATE && (!fromPeer || this.holdsAny(u, d, true, 0, P, this.touchedBits))) {
      const touched = this.set.touched
      const end = Math.min(touched.length, (this.touchCursor[d] as number) + limit)
      for (let j = this.touchCursor[d] as number; j < end; j++) {
        const q = touched[j] as number
        if (this.needs(d, q) && this.can(d, u, q)) return q * 2 + 1
      }
    }
    if (used >= this.p.pipeline) return -1
    let c = this.fileCursor[d] as number
    const fileEnd = this.fileEnd[d] as number
    while (c < fileEnd && this.hasPiece(d, c)) c++
    this.fileCursor[d] = c
    if (!fromPeer || this.holdsAny(u, d, true, c, fileEnd)) {
      for (let q = c, seen = 0; q < fileEnd && seen < limit; q++) {
        if (this.hasPiece(d, q)) continue
        seen++
        if (this.needs(d, q) && this.can(d, u, q)) return q * 2
      }
    }
    const end = Math.min(this.missing[d] as number, limit)
    if (fromPeer) return this.firstInOrder(d, u, end)
    for (let j = 0; j < end; j++) {
      const q = this.order[base + j] as number
      if (this.needs(d, q) && this.can(d, u, q)) return q * 2
    }
    return -1
  }

  /**
   * The first of d's first `end` pieces in its own order that peer u holds and d needs, as the walk
   * down the order finds it: from the few pieces u could give (the one placed first), or, when u
   * could give many, by that walk (it soon finds one).
   */
  private firstInOrder (d: number, u: number, end: number): number {
    const W = this.pieceWords
    const base = d * this.pieces
    const could = this.could
    let count = 0
    for (let w = 0; w < W; w++) {
      const x = (this.hasBits[u * W + w] as number) & (this.needBits[d * W + w] as number)
      could[w] = x
      if (x !== 0) count += bitCount(x)
    }
    if (count === 0) return -1
    // Placing each costs a look-up apiece; the walk takes about missing / count steps.
    if (count * count <= (this.missing[d] as number)) {
      let best = end
      for (let w = 0; w < W; w++) {
        for (let x = could[w] as number; x !== 0; x &= x - 1) {
          const at = this.orderAt[base + (w << 5) + 31 - Math.clz32(x & -x)] as number
          if (at < best) best = at
        }
      }
      return best < end ? (this.order[base + best] as number) * 2 : -1
    }
    for (let j = 0; j < end; j++) {
      const q = this.order[base + j] as number
      if ((could[q >> 5] as number) >>> (q & 31) & 1) return q * 2
    }
    return -1
  }

  /** How v wants a piece it lacks: 0 not yet (its agent is starting), 1 in the background or a file, 2 a read. */
  private wants (v: number, q: number): number {
    const phase = this.phase[v] as number
    if (phase === PHASE_START) return 0
    if (phase === PHASE_RELOCATE) return this.set.isTouched[q] ? 2 : 1
    return phase === PHASE_OPEN && q === this.set.headers[this.opened[v] as number] ? 2 : 1
  }

  private can (d: number, u: number, q: number): boolean {
    const P = this.pieces
    if (u !== HEAD) return this.hasPiece(u, q)
    return (this.backoff[d * P + q] as number) <= this.now && !this.peerHolds(d, q)
  }

  /** Whether any connected peer of d holds q (the picker's peerHave count, taken when the head is considered). */
  private peerHolds (d: number, q: number): boolean {
    const at = d * this.m
    for (let j = 0; j < (this.deg[d] as number); j++) if (this.holds(this.adj[at + j] as number, q)) return true
    return false
  }

  /** Whether d has q. */
  private hasPiece (d: number, q: number): boolean {
    return ((this.hasBits[d * this.pieceWords + (q >> 5)] as number) >>> (q & 31) & 1) === 1
  }

  /** Whether d lacks q and has not asked for it. */
  private needs (d: number, q: number): boolean {
    return ((this.needBits[d * this.pieceWords + (q >> 5)] as number) >>> (q & 31) & 1) === 1
  }

  /** Whether v has piece q (per piece × node: the walks over a node's peers read these). */
  private holds (v: number, q: number): boolean {
    return ((this.hasByPiece[q * this.nodeWords + (v >> 5)] as number) >>> (v & 31) & 1) === 1
  }

  /** Sets or clears v's bit of q in a per piece × node array. */
  private mark (bits: Int32Array, v: number, q: number, on: boolean): void {
    const w = q * this.nodeWords + (v >> 5)
    if (on) bits[w] |= 1 << (v & 31)
    else bits[w] &= ~(1 << (v & 31))
  }

  /** Sets or clears d's bit of q in a per node × piece array. */
  private markPiece (bits: Int32Array, d: number, q: number, on: boolean): void {
    const w = d * this.pieceWords + (q >> 5)
    if (on) bits[w] |= 1 << (q & 31)
    else bits[w] &= ~(1 << (q & 31))
  }

  /** d asks u (its peer i, or the head) for `piece`. */
  private request (d: number, i: number, u: number, piece: number, read: boolean): void {
    const viaHead = i === VIA_HEAD
    this.mark(this.busyByPiece, d, piece, true)
    this.markPiece(this.needBits, d, piece, false)
    this.inflightCount[d]++
    if ((viaHead ? this.headSlots[d]++ : this.slots[d * this.m + i]++) === 0) this.flows[u]++
    if (!viaHead) this.peerSlots[u * this.m + (this.rev[d * this.m + i] as number)] = this.slots[d * this.m + i] as number
    this.cpus.run(d, this.now, this.p.messageCpu)
    const arrives = this.now + this.p.latency
    if (viaHead && this.deferred(d, piece)) {
      // A BEP 6 reject: another node is getting it from the head; ask peers, and the head after a backoff.
      const at = this.cpus.run(HEAD, arrives, this.p.messageCpu) + this.p.latency
      this.q.push(at, E.Reject, d, piece)
      return
    }
    const size = this.set.pieceBytes[piece] as number
    const ready = this.cpus.run(u, arrives, viaHead ? this.p.headPieceCpu : this.p.pieceSendCpu)
    const send = size / (this.p.rate * this.p.linkGoodput)
    const start = Math.max(ready, this.upFree[u] as number)
    this.upFree[u] = start + send
    const sent = read ? Math.min(start + send, ready + send * (this.flows[u] as number)) : start + send
    if (viaHead) this.headBytes += size
    this.cpus.runUnowned(this.now, this.p.emulationCpuPerPiece)
    this.q.push(sent + this.p.latency, E.Arrive, d, piece, i)
  }

  /**
   * The head's defer-to-peers: a piece on its way to another node is turned down. On its way: sent
   * within deferToPeers, or within headConfirmMax and that node has not verified it.
   */
  private deferred (d: number, piece: number): boolean {
    const to = this.sentTo[piece] as number
    const since = this.now - (this.sentAt[piece] as number)
    const onItsWay = to >= 0 && (since < this.p.deferToPeers || (since < this.p.headConfirmMax && !this.hasPiece(to, piece)))
    if (onItsWay) return to !== d
    this.sentTo[piece] = d
    this.sentAt[piece] = this.now
    return false
  }

  private arrive (d: number, piece: number, i: number): void {
    const at = this.cpus.run(d, this.now, this.recvCpu)
    this.q.push(at, E.Verified, d, piece, i)
  }

  private verified (d: number, piece: number, i: number): void {
    const P = this.pieces
    const m = this.m
    this.settle(d, i)
    this.lastProgress[d] = this.now
    // Now had; still busy and not needed, as since it was asked for.
    this.mark(this.hasByPiece, d, piece, true)
    this.markPiece(this.hasBits, d, piece, true)
    this.dropFromOrder(d, piece)
    // Complete: a `completed` announce to the tracker (none in the DHT, none with a node list).
    if (++this.haveCount[d] === P && this.p.discovery === 'tracker') this.cpus.run(HEAD, this.now + this.p.latency, this.p.trackerAnnounceCpu)
    // `have` to every peer that lacks it; each may now ask this node for it.
    const adj = this.adj
    const busy = this.busyByPiece
    const peerSlots = this.peerSlots
    const readPipeline = this.p.readPipeline
    const row = piece * this.nodeWords
    const at = d * m
    const deg = this.deg[d] as number
    for (let j = 0; j < deg; j++) {
      const v = adj[at + j] as number
      if ((busy[row + (v >> 5)] as number) >>> (v & 31) & 1) continue
      // What d offers v changed by this piece only: had v's pipeline to d room, it asked for the rest already.
      const used = peerSlots[at + j] as number
      if (used >= readPipeline) continue
      const wanted = this.wants(v, piece)
      if (wanted !== 0 && used < (wanted === 2 ? readPipeline : this.p.pipeline)) {
        this.request(v, this.rev[at + j] as number, d, piece, wanted === 2)
      }
    }
    // The haves it sent (to every peer without the piece), and one from each peer that held it before.
    this.cpus.run(d, this.now, deg * this.p.messageCpu)
    if (this.phase[d] === PHASE_OPEN && piece === this.set.headers[this.opened[d] as number]) this.openLibraries(d)
    else this.checkProgram(d)
    this.fill(d, i)
  }

  /** A request of `d` to its peer `i` (or the head) is answered: its slot is free (the piece's bits are the caller's). */
  private settle (d: number, i: number): void {
    this.inflightCount[d]--
    if (i === VIA_HEAD) {
      if (--this.headSlots[d] === 0) this.flows[HEAD]--
    } else {
      const e = d * this.m + i
      if (--this.slots[e] === 0) this.flows[this.adj[e] as number]--
      this.peerSlots[(this.adj[e] as number) * this.m + (this.rev[e] as number)] = this.slots[e] as number
    }
  }

  private rejected (d: number, piece: number): void {
    const P = this.pieces
    const m = this.m
    this.settle(d, VIA_HEAD)
    this.mark(this.busyByPiece, d, piece, false)
    this.markPiece(this.needBits, d, piece, true)
    this.backoff[d * P + piece] = this.now + this.p.headBackoff
    this.q.push(this.now + this.p.headBackoff, E.Wake, d)
    for (let j = 0; j < (this.deg[d] as number); j++) {
      if (this.holds(this.adj[d * m + j] as number, piece)) this.fill(d, j)
    }
    this.fill(d, VIA_HEAD)
  }

  /** The once-a-second re-run: only a node with nothing in flight needs it here (the model wakes nodes on every `have`). */
  private tick (d: number): void {
    if (this.haveCount[d] === this.pieces) return
    // Node list: a node that did not dial the head dials it once its wait (eager: the whole set)
    // made no progress for headFallback; the code checks on the same 1 s timer (the nanosecond:
    // a tick's time is a sum of floats).
    if (this.laterHead[d] && this.now - (this.lastProgress[d] as number) >= this.p.headFallback - 1e-9) {
      this.laterHead[d] = 0
      this.dialHead(d, 0)
    }
    if (this.inflightCount[d] === 0) this.fillAll(d)
    this.q.push(this.now + TICK, E.Tick, d)
  }

  private fillAll (d: number): void {
    const m = this.m
    const deg = this.deg[d] as number
    for (let k = 0; k < deg; k++) {
      const i = ((this.firstPeer[d] as number) + k) % deg
      if ((this.slots[d * m + i] as number) < this.p.pipeline) this.fill(d, i)
    }
    this.fill(d, VIA_HEAD)
  }

  private shuffleOrder (d: number): void {
    const P = this.pieces
    const base = d * P
    for (let i = 0; i < P; i++) this.order[base + i] = i
    for (let i = P - 1; i > 0; i--) {
      const j = Math.floor(this.rnd() * (i + 1))
      const t = this.order[base + i] as number
      this.order[base + i] = this.order[base + j] as number
      this.order[base + j] = t
    }
    for (let i = 0; i < P; i++) this.orderAt[base + (this.order[base + i] as number)] = i
    this.missing[d] = P
  }

  private dropFromOrder (d: number, piece: number): void {
    const base = d * this.pieces
    const at = this.orderAt[base + piece] as number
    const last = this.order[base + --this.missing[d]] as number
    this.order[base + at] = last
    this.orderAt[base + last] = at
  }

  private result (): LaunchResult {
    const finish = this.doneAt.slice(1).sort()
    const cpu = this.cpus.used.slice(1).sort()
    const degrees = this.deg.slice(1).sort()
    return {
      nodes: this.n,
      finish,
      makespan: finish[finish.length - 1] as number,
      median: quantile(finish, 0.5),
      p99: quantile(finish, 0.99),
      headBytes: this.headBytes,
      headDescCopies: this.headDescCopies,
      headCpu: this.cpus.used[HEAD] as number,
      agentCpuMedian: quantile(cpu, 0.5),
      lastRegistered: this.lastRegistered,
      degreeMin: degrees[0] as number,
      headConns: this.headConns,
      events: this.q.popped
    }
  }
}
