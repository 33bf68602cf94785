// One launch, simulated piece by piece: N node agents start, get the description (launch mode),
// register with the head's tracker, connect to the head's seeder and to the peers the tracker
// lists, and fetch the set with the piece picker's policy while each node's program opens its
// libraries one after another; the head serves a piece to one node at a time (defer-to-peers).
//
// What a transfer is: a request reaches the serving peer after the link latency, waits for that
// peer's CPU (first come, first served: its event loop), then for its uplink, which sends pieces
// first come, first served at the link rate; a request a program waits on (a read) is instead
// charged the time a fair share of the link would take (TCP shares the link among connections,
// and a read has at most a piece or two queued ahead of it on its own connection). The piece then
// waits for the receiver's CPU (assembly, SHA-1, store), and only then is it verified, announced
// (`have` to every connected peer that lacks it) and its request slot free. Downlinks are not a
// separate bottleneck: links are symmetric, and every uplink's flows are spread over the swarm.
import { Cpus } from './cpu.ts'
import { EventQueue } from './heap.ts'
import type { Params } from './params.ts'
import type { LibrarySet } from './set.ts'

const HEAD = 0
/** Edge index standing for "the head" in events (a node's neighbours are 0..deg-1). */
const VIA_HEAD = -1

const E = {
  Slice: 0, Started: 1, PeekAgain: 2, PeekReply: 3, DescDone: 4, Registered: 5, Arrive: 6,
  Verified: 7, Reject: 8, Wake: 9, Tick: 10, Redial: 11
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
  /** When the last node registered with the tracker. */
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

const quantile = (sorted: Float64Array | Int32Array, q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number

export function simulateLaunch (prm: Params, set: LibrarySet): LaunchResult {
  return new Launch(prm, set).run()
}

class Launch {
  private readonly p: Params
  private readonly set: LibrarySet
  private readonly n: number
  private readonly pieces: number
  /** 0, 1, … pieces − 1: a range of pieces as a want list. */
  private readonly inOrder: Int32Array
  private readonly m: number
  private readonly rnd: () => number
  private readonly q = new EventQueue()
  private readonly cpus: Cpus
  private now = 0

  // Per node × piece (row 0 is the head, which has everything).
  private readonly has: Uint8Array
  private readonly inflight: Uint8Array
  // The same per piece × node, for the walks over a node's peers on every `have` (a piece's row
  // of all nodes stays in cache; a node's rows of 16,000 peers would not).
  private readonly hasByPiece: Uint8Array
  private readonly inflightByPiece: Uint8Array
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
  /** Where each node's walk over its connections starts (the code walks them in connection order, which differs per node). */
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
  private lastRegistered = 0
  private done = 0

  constructor (prm: Params, set: LibrarySet) {
    this.p = prm
    this.set = set
    this.n = prm.nodes
    this.pieces = set.pieceCount
    this.inOrder = Int32Array.from({ length: set.pieceCount }, (_, i) => i)
    this.m = Math.min(prm.maxConns, prm.nodes)
    this.rnd = random(prm.seed)
    this.cpus = new Cpus(this.n, prm.sharedCores, prm.coresPerNode)
    const rows = (this.n + 1) * this.pieces
    this.has = new Uint8Array(rows)
    this.has.fill(1, 0, this.pieces)
    this.inflight = new Uint8Array(rows)
    this.hasByPiece = new Uint8Array(rows)
    for (let p = 0; p < this.pieces; p++) this.hasByPiece[p * (this.n + 1)] = 1
    this.inflightByPiece = new Uint8Array(rows)
    this.backoff = new Float32Array(rows)
    this.order = new Uint16Array(rows)
    this.orderAt = new Uint16Array(rows)
    const edges = (this.n + 1) * this.m
    this.adj = new Int32Array(edges)
    this.rev = new Int32Array(edges)
    this.slots = new Uint8Array(edges)
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
      case E.Slice: return this.runSliced(a, this.now, b, c)
      case E.Started: return this.p.mode === 'launch' ? this.peek(a) : this.join(a)
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
    }
  }

  /** Runs a long job (an agent's start, a program) in slices on shared cores, whole on own ones. */
  private runSliced (d: number, at: number, left: number, job: number): void {
    if (left <= 0) return this.jobDone(d, job)
    const slice = Math.min(left, this.cpus.slice)
    const end = job === JOB_PROGRAM ? this.cpus.runProgram(d, at, slice) : this.cpus.run(d, at, slice)
    this.q.push(end, E.Slice, d, left - slice, job)
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
    const transfer = this.p.descBytes / this.p.rate
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
    if (this.p.discovery === 'dht') {
      this.dhtLookup(d)
    } else {
      const at = this.cpus.run(HEAD, this.now + this.p.latency, this.p.trackerRegisterCpu) + this.p.latency
      this.q.push(at, E.Registered, d)
    }
    this.dialHead(d, 0)
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
   * modelled: the intermediate rounds' CPU (one query per node reached), lost UDP, re-lookups.
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

  /** The tracker's reply: up to numwant random registered nodes, each dialed (both ends under their cap). */
  private registeredReply (d: number): void {
    const others = this.registeredCount
    this.registered[this.registeredCount++] = d
    this.lastRegistered = this.now
    const want = Math.min(this.p.numwant, others)
    if (want === others) {
      for (let i = 0; i < others; i++) this.connect(d, this.registered[i] as number)
    } else {
      for (let i = 0; i < want; i++) this.connect(d, this.registered[Math.floor(this.rnd() * others)] as number)
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
      if (!this.has[d * this.pieces + (headers[k] as number)]) break
      this.opened[d] = k + 1
      if (k + 1 === headers.length) this.phase[d] = PHASE_RELOCATE
    }
    // What became wanted: the files just opened (their pieces go to the front), or every piece the program reads.
    if (this.phase[d] === PHASE_RELOCATE) {
      this.askAround(d, this.set.touched, 0, this.set.touched.length)
      this.checkProgram(d)
    } else {
      this.askAround(d, this.inOrder, from, this.fileEnd[d] as number)
    }
  }

  private checkProgram (d: number): void {
    if (this.phase[d] !== PHASE_RELOCATE) return
    const touched = this.set.touched
    let c = this.touchCursor[d] as number
    while (c < touched.length && this.has[d * this.pieces + (touched[c] as number)]) c++
    this.touchCursor[d] = c
    if (c < touched.length || !this.programCpuDone[d]) return
    this.phase[d] = PHASE_DONE
    this.doneAt[d] = this.now
    this.done++
  }

  /** New wants (list[from..to)): fill the free request slots of the peers that hold any of them, and of the head. */
  private askAround (d: number, list: Int32Array, from: number, to: number): void {
    const P = this.pieces
    const m = this.m
    const deg = this.deg[d] as number
    for (let k = 0; k < deg; k++) {
      const i = ((this.firstPeer[d] as number) + k) % deg
      if (this.slots[d * m + i] as number >= this.p.readPipeline) continue
      const v = this.adj[d * m + i] as number
      for (let j = from; j < to; j++) {
        const q = list[j] as number
        if (this.has[v * P + q] && !this.has[d * P + q]) { this.fill(d, i); break }
      }
    }
    this.fill(d, VIA_HEAD)
  }

  // --- The picker (lib/swarm/picker.ts): reads, then opened files in order, then the background; the head only for what no peer holds.

  private fill (d: number, i: number): void {
    if (this.phase[d] === PHASE_START) return
    const viaHead = i === VIA_HEAD
    if (viaHead && !this.headConn[d]) return
    for (;;) {
      const used = viaHead ? this.headSlots[d] as number : this.slots[d * this.m + i] as number
      const pick = this.pick(d, viaHead ? HEAD : this.adj[d * this.m + i] as number, used)
      if (pick < 0) return
      this.request(d, i, pick >> 1, (pick & 1) === 1)
    }
  }

  /**
   * The next piece to ask `u` for, as piece × 2 + (1 if a program waits on it), or -1. Unlike the
   * code, the background is not held back while a read waits: the code tops every pipeline up
   * between reads (the picker runs before the program's next read reaches the agent), so they stay
   * about full; a read is instead charged a fair share of the link (see request).
   */
  private pick (d: number, u: number, used: number): number {
    const P = this.pieces
    const base = d * P
    const limit = this.p.scan
    if (used >= this.p.readPipeline) return -1
    const phase = this.phase[d] as number
    if (phase === PHASE_OPEN) {
      const h = this.set.headers[this.opened[d] as number] as number
      if (!this.has[base + h] && !this.inflight[base + h] && this.can(d, u, h)) return h * 2 + 1
    } else if (phase === PHASE_RELOCATE) {
      const touched = this.set.touched
      const end = Math.min(touched.length, (this.touchCursor[d] as number) + limit)
      for (let j = this.touchCursor[d] as number; j < end; j++) {
        const q = touched[j] as number
        if (!this.has[base + q] && !this.inflight[base + q] && this.can(d, u, q)) return q * 2 + 1
      }
    }
    if (used >= this.p.pipeline) return -1
    let c = this.fileCursor[d] as number
    const fileEnd = this.fileEnd[d] as number
    while (c < fileEnd && this.has[base + c]) c++
    this.fileCursor[d] = c
    for (let q = c, seen = 0; q < fileEnd && seen < limit; q++) {
      if (this.has[base + q]) continue
      seen++
      if (!this.inflight[base + q] && this.can(d, u, q)) return q * 2
    }
    const end = Math.min(this.missing[d] as number, limit)
    for (let j = 0; j < end; j++) {
      const q = this.order[base + j] as number
      if (!this.inflight[base + q] && this.can(d, u, q)) return q * 2
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
    if (u !== HEAD) return this.has[u * P + q] === 1
    return (this.backoff[d * P + q] as number) <= this.now && !this.peerHolds(d, q)
  }

  /** Whether any connected peer of d holds q (the picker's peerHave count, taken when the head is considered). */
  private peerHolds (d: number, q: number): boolean {
    const row = q * (this.n + 1)
    const at = d * this.m
    for (let j = 0; j < (this.deg[d] as number); j++) if (this.hasByPiece[row + (this.adj[at + j] as number)]) return true
    return false
  }

  private request (d: number, i: number, piece: number, read: boolean): void {
    const viaHead = i === VIA_HEAD
    const u = viaHead ? HEAD : this.adj[d * this.m + i] as number
    this.inflight[d * this.pieces + piece] = 1
    this.inflightByPiece[piece * (this.n + 1) + d] = 1
    this.inflightCount[d]++
    if ((viaHead ? this.headSlots[d]++ : this.slots[d * this.m + i]++) === 0) this.flows[u]++
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
    const send = size / this.p.rate
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
    const onItsWay = to >= 0 && (since < this.p.deferToPeers || (since < this.p.headConfirmMax && this.has[to * this.pieces + piece] === 0))
    if (onItsWay) return to !== d
    this.sentTo[piece] = d
    this.sentAt[piece] = this.now
    return false
  }

  private arrive (d: number, piece: number, i: number): void {
    const at = this.cpus.run(d, this.now, this.p.pieceRecvCpu)
    this.q.push(at, E.Verified, d, piece, i)
  }

  private verified (d: number, piece: number, i: number): void {
    const P = this.pieces
    const m = this.m
    const N1 = this.n + 1
    const row = piece * N1
    this.settle(d, i, piece)
    this.has[d * P + piece] = 1
    this.hasByPiece[row + d] = 1
    this.dropFromOrder(d, piece)
    // Complete: a `completed` announce to the tracker (none in the DHT).
    if (++this.haveCount[d] === P && this.p.discovery === 'tracker') this.cpus.run(HEAD, this.now + this.p.latency, this.p.trackerAnnounceCpu)
    // `have` to every peer that lacks it; each may now ask this node for it.
    const adj = this.adj
    const hasByPiece = this.hasByPiece
    const inflightByPiece = this.inflightByPiece
    const at = d * m
    const deg = this.deg[d] as number
    for (let j = 0; j < deg; j++) {
      const v = adj[at + j] as number
      if (hasByPiece[row + v]) continue
      if (inflightByPiece[row + v]) continue
      // What d offers v changed by this piece only: had v's pipeline to d room, it asked for the rest already.
      const back = this.rev[at + j] as number
      const wanted = this.wants(v, piece)
      if (wanted !== 0 && (this.slots[v * m + back] as number) < (wanted === 2 ? this.p.readPipeline : this.p.pipeline)) {
        this.request(v, back, piece, wanted === 2)
      }
    }
    // The haves it sent (to every peer without the piece), and one from each peer that held it before.
    this.cpus.run(d, this.now, deg * this.p.messageCpu)
    if (this.phase[d] === PHASE_OPEN && piece === this.set.headers[this.opened[d] as number]) this.openLibraries(d)
    else this.checkProgram(d)
    this.fill(d, i)
  }

  /** A request of `d` to its peer `i` (or the head) for `piece` is answered: no longer in flight. */
  private settle (d: number, i: number, piece: number): void {
    this.inflight[d * this.pieces + piece] = 0
    this.inflightByPiece[piece * (this.n + 1) + d] = 0
    this.inflightCount[d]--
    if (i === VIA_HEAD) {
      if (--this.headSlots[d] === 0) this.flows[HEAD]--
    } else if (--this.slots[d * this.m + i] === 0) {
      this.flows[this.adj[d * this.m + i] as number]--
    }
  }

  private rejected (d: number, piece: number): void {
    const P = this.pieces
    const m = this.m
    this.settle(d, VIA_HEAD, piece)
    this.backoff[d * P + piece] = this.now + this.p.headBackoff
    this.q.push(this.now + this.p.headBackoff, E.Wake, d)
    for (let j = 0; j < (this.deg[d] as number); j++) {
      if (this.hasByPiece[piece * (this.n + 1) + (this.adj[d * m + j] as number)]) this.fill(d, j)
    }
    this.fill(d, VIA_HEAD)
  }

  /** The once-a-second re-run: only a node with nothing in flight needs it here (the model wakes nodes on every `have`). */
  private tick (d: number): void {
    if (this.haveCount[d] === this.pieces) return
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
