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

/**
 * A failure another process has already reported: the command fails without a line of its own.
 * Every rank of a node sees its agent fail; one line per node, not per rank (16,000 at scale).
 */
export class AlreadyReported extends Error {}

/**
 * A failure as it crosses to another process (a node's state, a daemon's pipe to its parent): the
 * error itself as data, so the process that reports it need not read it back out of a log.
 */
export interface FailureRecord {
  readonly code: ErrorCode
  readonly message: string
  readonly hint?: string
}

export function failureOf (err: unknown): FailureRecord {
  if (err instanceof P2prunError) return { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }
  return { code: 'LAUNCH', message: `unexpected error: ${err instanceof Error ? err.message : String(err)}` }
}

/** The error a record stands for, its message after `prefix` (who saw it fail). */
export function failureError (record: Partial<FailureRecord>, prefix = ''): P2prunError {
  return new P2prunError(record.code ?? 'LAUNCH', `${prefix}${record.message ?? 'no reason given'}`, { hint: record.hint })
}

/** A record as one line of text, for a pipe. */
export const failureLine = (err: unknown): string => JSON.stringify(failureOf(err))

/** The error a line from failureLine stands for; a line that is not one is taken as the message. */
export function failureFromLine (line: string): P2prunError {
  try {
    return failureError(JSON.parse(line) as Partial<FailureRecord>)
  } catch {
    return failureError({ message: line.trim() })
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
export const fuseError = (message: string, hint?: string, cause?: unknown) =>
  new P2prunError('FUSE', message, { hint, cause })

/**
 * A value from outside (a path, a description's field, a variable) as it goes into a message: in
 * double quotes, with quotes, backslashes and control characters escaped, so a hostile name can
 * neither break the one-line message nor drive the user's terminal (ESC sequences).
 */
export function quote (value: string): string {
  return `"${printable(value.replace(/["\\]/g, '\\$&'))}"`
}

/** One line for stderr: the message, then the hint. Unknown errors keep their message (no stack). */
export function formatError (err: unknown): string {
  const line = err instanceof P2prunError
    ? (err.hint ? `${err.message} (hint: ${err.hint})` : err.message)
    : `unexpected error: ${err instanceof Error ? err.message : String(err)}`
  // Messages also name paths unquoted, and unexpected errors carry whatever Node put in them:
  // escaped here, every error stays one line and inert on a terminal.
  return printable(line)
}

/** C0, DEL and C1 control characters as \xNN: text from a description or a path, safe on a terminal. */
export function printable (text: string): string {
  return text.replace(/\p{Cc}/gu, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** The innermost reason of a failed fetch/connect (undici nests it: TypeError → cause → errors[]). */
export function networkReason (err: unknown): string {
  let e = err as { cause?: unknown, code?: string, message?: string, errors?: { code?: string }[] } | undefined
  while (e?.cause) e = e.cause as typeof e
  return e?.code ?? e?.errors?.[0]?.code ?? e?.message ?? String(err)
}
