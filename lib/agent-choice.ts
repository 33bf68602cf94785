// Which agent serves a mount, by the `agent` setting: this process's (agent.ts) or the native one
// (native-agent.ts), for `p2prun mount` and a launch's node agent alike.
import type { AgentOptions, RunningAgent } from './agent.ts'
import type { AgentChoice } from './config.ts'
import { usageError } from './errors.ts'
import { nativeRefusal, NativeAgent, type AgentNeeds } from './native-agent.ts'

/**
 * The agent `choice` gives for `options`: native when it serves them (`auto`), or always
 * (`native`: a usage error if it does not), else this process's.
 */
export function agentKind (options: AgentNeeds, choice: AgentChoice): RunningAgent['kind'] {
  // In every mode: in block and file modes too the native agent is faster (block mode at 8 nodes
  // 4.7-5.3 s against 5.2-6.1, at 32 10.1-11.2 against 20.1-23.3) at a third of the CPU
  // (bench/README.md, 2026-12-04 09:22 and 12:07).
  if (choice === 'node') return 'node'
  const refusal = nativeRefusal(options)
  if (refusal === undefined) return 'native'
  if (choice === 'native') throw usageError(`the native agent does not do ${refusal}`, 'set agent to auto or node (--agent, P2PRUN_AGENT)')
  return 'node'
}

/**
 * The agent of that kind, started: once this returns, its mount is up. The Node agent's modules
 * (the swarm, the file system) are loaded only for it: a native agent's Node parent skips them.
 */
export async function startAgent (options: AgentOptions, kind: RunningAgent['kind']): Promise<RunningAgent> {
  return kind === 'native' ? NativeAgent.start(options) : (await import('./agent.ts')).Agent.start(options)
}
