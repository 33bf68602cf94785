// The simulation's event queue: a binary min-heap on time, held in typed arrays (a time and three
// integers per event) so that millions of events cost no objects and no garbage collection.
export class EventQueue {
  private times = new Float64Array(1024)
  private kinds = new Int32Array(1024)
  private as = new Int32Array(1024)
  private bs = new Int32Array(1024)
  private cs = new Int32Array(1024)
  private n = 0
  /** Events popped so far: the model's own cost, reported with its results. */
  popped = 0

  push (time: number, kind: number, a: number, b = 0, c = 0): void {
    if (this.n === this.times.length) this.grow()
    let i = this.n++
    // Sift up: move parents down until the new event's place is found, then write it once.
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (this.times[parent] as number <= time) break
      this.move(parent, i)
      i = parent
    }
    this.set(i, time, kind, a, b, c)
  }

  /** Removes the earliest event into `out` ([time, kind, a, b, c]); false if none. */
  pop (out: Float64Array): boolean {
    if (this.n === 0) return false
    out[0] = this.times[0] as number
    out[1] = this.kinds[0] as number
    out[2] = this.as[0] as number
    out[3] = this.bs[0] as number
    out[4] = this.cs[0] as number
    this.popped++
    const last = --this.n
    if (last === 0) return true
    const time = this.times[last] as number
    const kind = this.kinds[last] as number
    const a = this.as[last] as number
    const b = this.bs[last] as number
    const c = this.cs[last] as number
    // Sift down the last event from the root.
    let i = 0
    for (;;) {
      let child = 2 * i + 1
      if (child >= last) break
      if (child + 1 < last && (this.times[child + 1] as number) < (this.times[child] as number)) child++
      if ((this.times[child] as number) >= time) break
      this.move(child, i)
      i = child
    }
    this.set(i, time, kind, a, b, c)
    return true
  }

  private move (from: number, to: number): void {
    this.times[to] = this.times[from] as number
    this.kinds[to] = this.kinds[from] as number
    this.as[to] = this.as[from] as number
    this.bs[to] = this.bs[from] as number
    this.cs[to] = this.cs[from] as number
  }

  private set (i: number, time: number, kind: number, a: number, b: number, c: number): void {
    this.times[i] = time
    this.kinds[i] = kind
    this.as[i] = a
    this.bs[i] = b
    this.cs[i] = c
  }

  private grow (): void {
    const size = this.times.length * 2
    const f = new Float64Array(size); f.set(this.times); this.times = f
    const k = new Int32Array(size); k.set(this.kinds); this.kinds = k
    const a = new Int32Array(size); a.set(this.as); this.as = a
    const b = new Int32Array(size); b.set(this.bs); this.bs = b
    const c = new Int32Array(size); c.set(this.cs); this.cs = c
  }
}
