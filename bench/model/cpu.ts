// Where CPU work runs and how long it waits. Each job is run to completion in the order it is
// handed in (first come, first served), which is what one event loop does with the messages it
// reads; long jobs (an agent's start) are handed in as short slices so that jobs of other
// processes interleave with them, as the kernel's scheduler does.
//  - shared: every agent, every program and the head on one pool of cores, the 2-core VM that
//    runs the emulated cluster (a job takes the core that frees first);
//  - own: every node's agent on a core of its own, its program on a second core if it has one,
//    the head on a core of its own (a real cluster).
export class Cpus {
  /** CPU seconds each entity used (0: the head, 1..N: node agents). */
  readonly used: Float64Array
  /** When each core is next free. */
  private readonly free: Float64Array
  private readonly shared: boolean
  private readonly nodes: number
  private readonly programCore: boolean

  constructor (nodes: number, sharedCores: number, coresPerNode: number) {
    this.nodes = nodes
    this.shared = sharedCores > 0
    this.programCore = !this.shared && coresPerNode >= 2
    this.used = new Float64Array(nodes + 1)
    this.free = new Float64Array(this.shared ? sharedCores : (this.programCore ? 2 : 1) * (nodes + 1))
  }

  /** The largest slice a long job is cut into: the kernel's time slice on shared cores, else the whole job. */
  get slice (): number {
    return this.shared ? 0.004 : Infinity
  }

  /** Runs `cost` seconds for `entity`'s agent (or the head) from `at`; returns when it is done. */
  run (entity: number, at: number, cost: number): number {
    this.used[entity] = (this.used[entity] as number) + cost
    return this.occupy(this.shared ? this.soonest() : entity, at, cost)
  }

  /** Runs the program of a node (not counted as its agent's CPU). */
  runProgram (node: number, at: number, cost: number): number {
    return this.occupy(this.shared ? this.soonest() : this.programCore ? this.nodes + 1 + node : node, at, cost)
  }

  /** Work outside any process the bench measures (the emulated network's softirq): shared cores only. */
  runUnowned (at: number, cost: number): void {
    if (this.shared) this.occupy(this.soonest(), at, cost)
  }

  private occupy (core: number, at: number, cost: number): number {
    const done = Math.max(at, this.free[core] as number) + cost
    this.free[core] = done
    return done
  }

  private soonest (): number {
    let best = 0
    for (let i = 1; i < this.free.length; i++) if ((this.free[i] as number) < (this.free[best] as number)) best = i
    return best
  }
}
