// P2PRUN_DEBUG, read where it is used, on each host (it stays per node: session/job-spec.ts):
//   1  an error line is followed by its stack; node agents keep their logs (node-state.ts) after a
//      clean end, each ending with the agent's counters
//   2  agents also log which route the description came by and their counters every few seconds
// Any other non-empty value but 0 counts as 1.
export type DebugLevel = 0 | 1 | 2

export function debugLevel (env: NodeJS.ProcessEnv): DebugLevel {
  const v = env.P2PRUN_DEBUG
  if (v === undefined || v === '' || v === '0') return 0
  return v === '2' ? 2 : 1
}
