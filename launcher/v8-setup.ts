// The V8 flags p2prun's commands run with, and the built-in modules loaded before them. Set first
// thing: by dist/cli.mjs (bundle-loader.ts) before it compiles the bundle, since V8 takes a code
// cache made under the same flags only; or by cli.ts when the sources run.
import v8 from 'node:v8'

/** The commands that run a node agent (umount is mount's alias). */
const AGENT_COMMANDS = new Set(['mount', 'umount', 'node-agent'])

/** Whether `p2prun FIRST ...` runs a node agent, whose flags (and so code cache) differ. */
export function runsAgent (first: string | undefined): first is string {
  return first !== undefined && AGENT_COMMANDS.has(first)
}

/**
 * Loads the built-in modules named (with those the long-lived commands need), then sets the flags.
 * The bundle's loader names every built-in the bundle imports: it compiles the bundle after the
 * flags, and each built-in the bundle would load then would be compiled from source.
 */
export function setUpV8 (first: string | undefined, builtins: readonly string[] = []): void {
  // Node 24 can deadlock at exit: the main thread joins V8's worker threads while a background Maglev
  // compile waits for a garbage collection only the main thread can run (nodejs/node#54918; seen in
  // CI: `p2prun describe` wrote its output, then hung in process.exit). Without Maglev, V8 tiers up
  // from Sparkplug straight to TurboFan, which does not allocate on the heap off the main thread.
  // Any V8 flag set also makes V8 refuse the compiled code Node ships for its built-in modules (made
  // with the default flags): each built-in loaded after this line is compiled from source. So the
  // ones the long-lived commands load later (the agent, the head, the launcher: hashing, HTTP, the
  // server sockets' cluster check, DNS, performance.now) are loaded before it: 7-10 ms of CPU,
  // against 19-24 ms after it (medians of 15 runs each).
  for (const id of [...builtins, 'node:crypto', 'node:http', 'node:cluster', 'node:dns', 'node:perf_hooks']) process.getBuiltinModule(id)
  v8.setFlagsFromString('--no-maglev')
  // A node agent's JavaScript is the glue around the addon's data path (native/: the wire, the store,
  // the FUSE server), and most agents live for one launch: TurboFan's compiles on V8's worker threads,
  // and the deoptimizations after them, cost an agent more than its optimized code saves. Without it
  // the agent's code tops out at Sparkplug's. Measured on the emulated cluster (bench/README.md,
  // 2026-12-03): whole-life agent CPU 1.03-1.07 against 1.17-1.22 CPU-s at 32 nodes, 0.85-0.99 against
  // 0.93-1.07 at 8. The head keeps TurboFan: its tracker answers thousands of nodes.
  if (runsAgent(first)) v8.setFlagsFromString('--no-turbofan')
}
