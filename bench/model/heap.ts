// The simulation's event queue: a binary min-heap on time, held in typed arrays so that millions of
// events cost no objects and no garbage collection. The heap moves only a time and a slot number;
// an event's kind and three integers stay side by side in their slot (one cache line) until it is
// popped, so a sift moves two values per level instead of five. Events of equal time come out in
// the order this heap's shape gives them: changing the heap (its arity, or a tie-break) would
// change every run's results.
export class EventQueue {
  private times = new Float64Array(1024)
  private slots = new Int32Array(1024)
  /** Per slot: kind, a, b, c, as 32-bit integers (a duration goes in as microseconds). */
  private events = new Int32Array(4 * 1024)
  /** Slots of popped events, to be used again. */
  private free = new Int32Array(1024)
  private freeCount = 0
  private n = 0
  /** Events popped so far: the model's own cost, reported with its results. */
  popped = 0

  push (time: number, kind: number, a: number, b = 0, c = 0): void {
    if (this.n === this.times.length) this.grow()
    // Every slot below the heap's capacity is either in the heap or free: a new one is the next.
    const slot = this.freeCount > 0 ? this.free[--this.freeCount] as number : this.n
    const e = this.events
    e[4 * slot] = kind
    e[4 * slot + 1] = a
    e[4 * slot + 2] = b
    e[4 * slot + 3] = c
    const times = this.times
    const slots = this.slots
    let i = this.n++
    // Sift up: move parents down until the new event's place is found, then write it once.
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (times[parent] as number <= time) break
      times[i] = times[parent] as number
      slots[i] = slots[parent] as number
      i = parent
    }
    times[i] = time
    slots[i] = slot
  }

  /** Removes the earliest event into `out` ([time, kind, a, b, c]); false if none. */
  pop (out: Float64Array): boolean {
    if (this.n === 0) return false
    const times = this.times
    const slots = this.slots
    const top = slots[0] as number
    const e = this.events
    out[0] = times[0] as number
    out[1] = e[4 * top] as number
    out[2] = e[4 * top + 1] as number
    out[3] = e[4 * top + 2] as number
    out[4] = e[4 * top + 3] as number
    this.free[this.freeCount++] = top
    this.popped++
    const last = --this.n
    if (last === 0) return true
    const time = times[last] as number
    const slot = slots[last] as number
    // Past the heap's end, a time no child beats: the pick of the earlier child needs no bounds test,
    // and compiles without a branch (it goes either way, half the time).
    times[last] = Infinity
    // Sift down the last event from the root.
    let i = 0
    for (;;) {
      let child = 2 * i + 1
      if (child >= last) break
      child += (times[child + 1] as number) < (times[child] as number) ? 1 : 0
      if ((times[child] as number) >= time) break
      times[i] = times[child] as number
      slots[i] = slots[child] as number
      i = child
    }
    times[i] = time
    slots[i] = slot
    return true
  }

  private grow (): void {
    const size = this.times.length * 2
    const f = new Float64Array(size); f.set(this.times); this.times = f
    const s = new Int32Array(size); s.set(this.slots); this.slots = s
    const e = new Int32Array(4 * size); e.set(this.events); this.events = e
    const r = new Int32Array(size); r.set(this.free); this.free = r
  }
}
