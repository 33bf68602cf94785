// What a program will load, found the way its dynamic loader finds it — without running the
// program (ldd may execute it): the program, then breadth-first every DT_NEEDED, each searched in
// the loader's order. glibc's: DT_RPATH of the needing object and of the objects that loaded it
// (unless it has DT_RUNPATH), LD_LIBRARY_PATH, its DT_RUNPATH, the loader's cache, the default
// directories. musl's (a program whose interpreter is ld-musl-*): LD_LIBRARY_PATH, then the
// DT_RUNPATH or else DT_RPATH of the needing object and of those that loaded it, then the system
// path (/etc/ld-musl-ARCH.path, or /lib:/usr/local/lib:/usr/lib); no cache; libc.so and its
// siblings (libm, libpthread…) are the loader itself. A candidate of another class or machine is
// skipped, as the loader skips it.
import { readFileSync, realpathSync, statSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { readElf, HOST_ELF, machineName, type ElfInfo } from './elf.ts'
import { readLdCache, type LdCache } from './ld-cache.ts'
import { sourceError } from './errors.ts'

/** How an object was found: the step of the loader's search that produced its path. */
export type FoundBy = 'program' | 'path' | 'RPATH' | 'LD_LIBRARY_PATH' | 'RUNPATH' | 'cache' | 'default'

export interface LoadedObject {
  /** The path the loader opens (not resolved through symlinks: $ORIGIN is its directory). */
  readonly path: string
  readonly elf: ElfInfo
  readonly foundBy: FoundBy
  /** The object whose DT_NEEDED brought it in; undefined for the program. */
  readonly neededBy: LoadedObject | undefined
  /** The DT_NEEDED name it answered. */
  readonly name: string
}

export interface Closure {
  readonly program: LoadedObject
  /** Every object, the program first, in the loader's (breadth-first) order. */
  readonly objects: readonly LoadedObject[]
}

export interface ClosureOptions {
  readonly env: NodeJS.ProcessEnv
  readonly cwd: string
  /** Injected by tests; read from /etc/ld.so.cache otherwise. */
  readonly cache?: LdCache
  /** The loader's built-in directories; this host's by default. */
  readonly defaultDirs?: readonly string[]
}

const MULTIARCH: Readonly<Record<string, string>> = {
  x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ppc64: 'powerpc64le-linux-gnu', riscv64: 'riscv64-linux-gnu', s390x: 's390x-linux-gnu'
}

/** glibc's built-in search path (Debian adds the multiarch directories before the classic ones). */
export function hostDefaultDirs (): string[] {
  const triplet = MULTIARCH[process.arch]
  const lib64 = HOST_ELF.bits === 64 ? ['/lib64', '/usr/lib64'] : []
  return [...(triplet ? [`/lib/${triplet}`, `/usr/lib/${triplet}`] : []), ...lib64, '/lib', '/usr/lib']
}

/**
 * The load closure of an ELF program. A needed library found nowhere fails as the loader would
 * ("libx.so.1: cannot open shared object file", naming who needs it); so does a program of another
 * class or machine than this host's.
 */
export async function loadClosure (program: string, options: ClosureOptions): Promise<Closure> {
  const exe = readElf(program)
  if (exe.bits !== HOST_ELF.bits || exe.machine !== HOST_ELF.machine) {
    throw sourceError(`${program} is a ${exe.bits}-bit ${machineName(exe.machine)} program; this host runs ${HOST_ELF.bits}-bit ${machineName(HOST_ELF.machine)}`,
      'launch it from a host of its own kind, or pass --libs DIR')
  }
  const root: LoadedObject = { path: program, elf: exe, foundBy: 'program', neededBy: undefined, name: path.basename(program) }
  const objects: LoadedObject[] = [root]
  // The loader reuses an object for a name it already loaded under that name or soname.
  const byName = new Map<string, LoadedObject>()
  const byFile = new Map<string, LoadedObject>()
  // The program's interpreter is the loader itself, already in memory: a need for it is met.
  const interpreter = exe.interpreter ? loadable(exe.interpreter) : undefined
  if (exe.interpreter) byName.set(path.basename(exe.interpreter), root)
  if (interpreter?.soname) byName.set(interpreter.soname, root)
  const musl = exe.interpreter ? muslArch(exe.interpreter) : undefined
  // musl's loader has no cache, and its own default directories.
  const cache = options.cache ?? (musl ? new Map() : await readLdCache())
  const defaultDirs = options.defaultDirs ?? (musl ? muslSystemPath(musl) : hostDefaultDirs())
  const libraryPath = splitPath(options.env.LD_LIBRARY_PATH)
  // The executable's $ORIGIN is where the kernel found it: /proc/self/exe, symlinks resolved.
  const origins = new Map<LoadedObject, string>([[root, path.dirname(realpathSync(program))]])
  const originOf = (o: LoadedObject) => origins.get(o) ?? path.dirname(o.path)
  const ctx = { cwd: options.cwd, libraryPath, cache, defaultDirs, originOf, root }

  for (let i = 0; i < objects.length; i++) {
    const from = objects[i] as LoadedObject
    for (const name of from.elf.needed) {
      if (byName.has(name) || (musl !== undefined && MUSL_BUILTIN.test(name))) continue
      // A name with a slash is that path, for either loader; others are searched.
      const found = name.includes('/') ? inDirs([path.dirname(path.resolve(ctx.cwd, name))], path.basename(name), 'path')
        : musl === undefined ? locate(name, from, ctx) : locateMusl(name, from, ctx)
      if (!found) {
        throw sourceError(`${name}: cannot open shared object file: No such file or directory (needed by ${from.path})`,
          'build or install it, or add its directory to LD_LIBRARY_PATH before launching')
      }
      const real = realpathSync(found.path)
      const known = byFile.get(real)
      if (known) {
        byName.set(name, known)
        continue
      }
      const object: LoadedObject = { ...found, neededBy: from, name }
      objects.push(object)
      byFile.set(real, object)
      byName.set(name, object)
      if (object.elf.soname) byName.set(object.elf.soname, object)
    }
  }
  return { program: root, objects }
}

interface SearchContext {
  readonly cwd: string
  readonly libraryPath: readonly string[]
  readonly cache: LdCache
  readonly defaultDirs: readonly string[]
  readonly originOf: (o: LoadedObject) => string
  readonly root: LoadedObject
}

function locate (name: string, from: LoadedObject, ctx: SearchContext): { path: string, elf: ElfInfo, foundBy: FoundBy } | undefined {
  if (from.elf.runpath.length === 0) {
    // DT_RPATH of the needing object, then of each object up the chain that loaded it, then the program's.
    for (let o: LoadedObject | undefined = from; o; o = o.neededBy) {
      const hit = inDirs(expand(o.elf.rpath, ctx.originOf(o)), name, 'RPATH')
      if (hit) return hit
    }
  }
  return inDirs(ctx.libraryPath, name, 'LD_LIBRARY_PATH') ??
    inDirs(expand(from.elf.runpath, ctx.originOf(from)), name, 'RUNPATH') ??
    (from.elf.noDefaultLib ? undefined : inDirs((ctx.cache.get(name) ?? []).map(path.dirname), name, 'cache') ?? inDirs(ctx.defaultDirs, name, 'default'))
}

/**
 * Names musl's loader answers itself, never opening a file: "lib" and one of these stems and a dot
 * (libc.so, libm.so.6, libpthread.so.0…), its reserved list; its libc holds what glibc splits.
 */
const MUSL_BUILTIN = /^lib(c|pthread|rt|m|dl|util|xnet)\./

/** The architecture in a musl loader's name (ld-musl-x86_64.so.1: x86_64); undefined: not musl's. */
function muslArch (interpreter: string): string | undefined {
  return /^ld-musl-(.+)\.so\.1$/.exec(path.basename(interpreter))?.[1]
}

/** musl's system path: its path file's directories (newlines or colons), else its built-in ones. */
function muslSystemPath (arch: string): string[] {
  let text: string
  try {
    text = readFileSync(`/etc/ld-musl-${arch}.path`, 'utf8')
  } catch {
    return ['/lib', '/usr/local/lib', '/usr/lib']
  }
  return text.split(/[\n:]/).map((d) => d.trim()).filter((d) => path.isAbsolute(d))
}

function locateMusl (name: string, from: LoadedObject, ctx: SearchContext): { path: string, elf: ElfInfo, foundBy: FoundBy } | undefined {
  const inChain = () => {
    for (let o: LoadedObject | undefined = from; o; o = o.neededBy) {
      const [dirs, foundBy]: [readonly string[], FoundBy] = o.elf.runpath.length > 0 ? [o.elf.runpath, 'RUNPATH'] : [o.elf.rpath, 'RPATH']
      const hit = inDirs(expand(dirs, ctx.originOf(o)), name, foundBy)
      if (hit) return hit
    }
    return undefined
  }
  return inDirs(ctx.libraryPath, name, 'LD_LIBRARY_PATH') ?? inChain() ?? inDirs(ctx.defaultDirs, name, 'default')
}

/** The first of `dirs` that holds a loadable `name`. */
function inDirs (dirs: readonly string[], name: string, foundBy: FoundBy): { path: string, elf: ElfInfo, foundBy: FoundBy } | undefined {
  for (const dir of dirs) {
    const file = path.join(dir, name)
    const elf = loadable(file)
    if (elf) return { path: file, elf, foundBy }
  }
  return undefined
}

/** An ELF object the loader would map: of this host's class and machine; anything else is skipped. */
function loadable (file: string): ElfInfo | undefined {
  let elf: ElfInfo
  try {
    if (!statSync(file, { throwIfNoEntry: false })?.isFile()) return undefined
    elf = readElf(file)
  } catch {
    return undefined // unreadable or not ELF: the loader goes on to its next candidate too
  }
  return elf.bits === HOST_ELF.bits && elf.machine === HOST_ELF.machine ? elf : undefined
}

/**
 * $ORIGIN and $PLATFORM expanded. Left out: entries with tokens the loader's build decides ($LIB),
 * and relative ones, which the loader takes from the working directory (not the submit host's).
 */
function expand (dirs: readonly string[], origin: string): string[] {
  return dirs.flatMap((d) => {
    const out = d.replace(/\$(\{ORIGIN\}|ORIGIN\b)/g, origin).replace(/\$(\{PLATFORM\}|PLATFORM\b)/g, os.machine())
    return path.isAbsolute(out) && !out.includes('$') ? [path.normalize(out)] : []
  })
}

function splitPath (value: string | undefined): string[] {
  // ';' separates too, in glibc; an empty entry is the working directory, which ranks do not share.
  return (value ?? '').split(/[:;]/).filter((d) => d !== '' && path.isAbsolute(d))
}
