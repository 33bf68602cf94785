// Every failure a user can cause is a P2prunError: a code for scripts and tests, a message that
// names the offending value, and a hint with the next thing to try. The CLI prints them as one line.

export type ErrorCode =
  | 'USAGE'
  | 'CONFIG'
  | 'SOURCE'
  | 'DESCRIPTION'
  | 'SWARM'
  | 'TRACKER'
  | 'FUSE'
  | 'LAUNCH'

export class P2prunError extends Error {
  readonly code: ErrorCode
  readonly hint: string | undefined

  constructor (code: ErrorCode, message: string, options: { hint?: string, cause?: unknown } = {}) {
    super(message, { cause: options.cause })
    this.name = 'P2prunError'
    this.code = code
    this.hint = options.hint
  }
}

export const usageError = (message: string, hint?: string) => new P2prunError('USAGE', message, { hint })
export const configError = (message: string, hint?: string) => new P2prunError('CONFIG', message, { hint })
export const sourceError = (message: string, hint?: string, cause?: unknown) =>
  new P2prunError('SOURCE', message, { hint, cause })
export const descriptionError = (message: string, hint?: string, cause?: unknown) =>
  new P2prunError('DESCRIPTION', message, { hint, cause })
export const swarmError = (message: string, hint?: string, cause?: unknown) =>
  new P2prunError('SWARM', message, { hint, cause })

/** One line for stderr: the message, then the hint. Unknown errors keep their message (no stack). */
export function formatError (err: unknown): string {
  if (err instanceof P2prunError) {
    return err.hint ? `${err.message} (hint: ${err.hint})` : err.message
  }
  if (err instanceof Error) return `unexpected error: ${err.message}`
  return `unexpected error: ${String(err)}`
}

/** The innermost reason of a failed fetch/connect (undici nests it: TypeError → cause → errors[]). */
export function networkReason (err: unknown): string {
  let e = err as { cause?: unknown, code?: string, message?: string, errors?: { code?: string }[] } | undefined
  while (e?.cause) e = e.cause as typeof e
  return e?.code ?? e?.errors?.[0]?.code ?? e?.message ?? String(err)
}
