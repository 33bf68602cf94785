// dist/cli.mjs, what bin/p2prun runs: compiles p2prun's bundle (dist/cli-bundle.js, a script that
// scripts/build.ts makes) with V8's code cache, and runs it. Node's own compile cache
// (NODE_COMPILE_CACHE) keeps the code V8 compiles at once, the top level; the functions a command
// calls are compiled as it runs, and every node agent, a fresh process, compiled its start, its
// swarm and its FUSE glue again. A cache made once a command has run holds them: the first run of
// each kind saves it once it has run to its end, and later runs take it. The kinds: each command
// that runs with an agent's V8 flags (`umount` would leave little but its own code for the
// agents, and Slurm's epilog runs it before the prolog's agent ends), and every other command. Measured (bench/README.md, 2026-12-03): an agent's CPU until its mount is up 227
// against 246 ms (15 starts each, taking turns); a whole agent's life on loopback 436 against 456 ms.
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import vm from 'node:vm'
import { runsAgent, setUpV8 } from './v8-setup.ts'

/** The bundle's content hash (scripts/build.ts): V8 checks a cache against the source's length only, so a cache is named by its build. */
declare const BUNDLE_HASH: string
/** The built-in modules the bundle imports (scripts/build.ts): loaded before the flags, as Node ships them compiled (v8-setup.ts). */
declare const BUNDLE_BUILTINS: readonly string[]

/** A cache file starts with the SHA-256 of the rest: V8 checks a cache's header, not the code in it. */
const DIGEST = 32

const first = process.argv[2]
setUpV8(first, BUNDLE_BUILTINS)
const file = path.join(path.dirname(fileURLToPath(import.meta.url)), 'cli-bundle.js')
const dir = ownDirectory(process.env.NODE_COMPILE_CACHE)
const kind = runsAgent(first) ? first : 'cli'
const cacheFile = dir ? path.join(dir, `p2prun-${BUNDLE_HASH}-${kind}.v8`) : undefined
const cachedData = readCache(cacheFile)
// One-byte text: the bundle is ASCII (scripts/build.ts), and V8 handles a one-byte string faster.
const script = new vm.Script(readFileSync(file, 'latin1'), { filename: file, cachedData })
const fresh = cachedData === undefined || script.cachedDataRejected === true

/** Writes the cache whole or not at all, and removes this kind's caches of other builds; a directory that cannot be written is no error. */
function saveCodeCache (): void {
  if (!fresh || !dir || !cacheFile) return
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const partial = `${cacheFile}.${process.pid}`
    const data = script.createCachedData()
    writeFileSync(partial, Buffer.concat([sha256(data), data]), { mode: 0o600 })
    renameSync(partial, cacheFile)
    for (const name of readdirSync(dir)) {
      const other = /^p2prun-([0-9a-f]+)-([a-z-]+)\.v8$/.exec(name)
      if (other && other[1] !== BUNDLE_HASH && other[2] === kind) rmSync(path.join(dir, name), { force: true })
    }
  } catch {}
}

/** The cache directory, if it is this user's own and no one else can write there (it holds code this process runs); else none. */
function ownDirectory (dir: string | undefined): string | undefined {
  if (!dir) return undefined
  try {
    const st = statSync(dir)
    return st.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o022) === 0 ? dir : undefined
  } catch {
    return dir // not there yet: made at the first save, as Node makes its own
  }
}

/** The cached code in `file`, if it is there whole; a missing, short or damaged file is no cache. */
function readCache (file: string | undefined): Buffer | undefined {
  if (!file) return undefined
  try {
    const bytes = readFileSync(file)
    const data = bytes.subarray(DIGEST)
    return bytes.length > DIGEST && sha256(data).equals(bytes.subarray(0, DIGEST)) ? data : undefined
  } catch {
    return undefined
  }
}

function sha256 (data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest()
}

await (script.runInThisContext() as (bundle: object) => Promise<void>)({ url: pathToFileURL(file).href, saveCodeCache })
