// What `p2prun -n N ./app` serves when no library directory is given: the program's load closure
// (load-closure.ts), less what every node already has locally, by a policy:
//   network    only what lives on a network or FUSE file system;
//   nonsystem  that, and everything outside the system directories (the default);
//   all        every object but the dynamic loader itself, which the kernel maps by its path.
// The program itself is served, and every rank execs it from the mount (a Python interpreter named
// as the program excepted: it finds its virtual environment beside the path it is started by,
// so it runs as given and is served only if the policy says so). A Python program
// also needs what its imports find: the interpreter is asked for sys.path (the interpreter runs,
// with -c, never the program), and each directory on it the policy serves is served whole.
import { realpath, stat } from 'node:fs/promises'
import path from 'node:path'
import { commandOutput } from './command-output.ts'
import { remoteKindOf } from './file-systems.ts'
import { readFileKind } from './elf.ts'
import { loadClosure, type ClosureOptions, type LoadedObject } from './load-closure.ts'
import { isWithin, programFile } from './files.ts'
import { sourceError, usageError } from './errors.ts'
import type { LibsPolicy } from './config.ts'


/** The operating system's own directories: node images have them locally. */
const SYSTEM_DIRS = ['/usr', '/lib', '/lib32', '/lib64', '/libx32', '/bin', '/sbin']

export interface Choice {
  /** Absolute path, as the loader (or the kernel, for the program) opens it. */
  readonly path: string
  readonly served: boolean
  /** Why it is (not) served, and how it was found: for --dry-run and `describe --for`. */
  readonly why: string
}

export interface ProgramSet {
  /** The program's real path (the kernel's /proc/self/exe): served. */
  readonly program: string
  /**
   * Whether ranks exec the program from the mount. Not a Python interpreter started by name: it
   * finds its virtual environment (pyvenv.cfg) beside the path it was started by.
   */
  readonly execFromMount: boolean
  readonly choices: readonly Choice[]
  /** Served paths. */
  readonly files: readonly string[]
  /** Directories of served libraries, in the order the loader first finds them: LD_LIBRARY_PATH into the mount. */
  readonly libDirs: readonly string[]
  /** Directories on Python's sys.path served whole, in its order: PYTHONPATH into the mount. */
  readonly pythonDirs: readonly string[]
  /** The dynamic loader the program (or its interpreter) asks for; undefined: a static program. */
  readonly loader: string | undefined
}

export async function programSet (name: string, policy: LibsPolicy, options: Pick<ClosureOptions, 'env' | 'cwd'>): Promise<ProgramSet> {
  const found = await programFile(name, options.env, options.cwd)
  if (!found) throw usageError(`program ${name} not found`, 'give its path, or put it on PATH')
  const program = await realpath(found).catch((err: NodeJS.ErrnoException) => {
    throw usageError(`program ${name} cannot be read: ${err.code}`, 'check the path')
  })
  const kind = readFileKind(program)
  if (kind.kind === 'other') {
    throw sourceError(`${name} is neither an ELF program nor a script with a #! line: p2prun cannot tell what it loads`,
      'add a #! line, or pass --libs DIR')
  }
  // A script's loads are its interpreter's: the closure is the interpreter's, and the script is served beside it.
  const interpreter = kind.kind === 'elf' ? undefined : await interpreterOf(kind.interpreter, kind.argument, options, name)
  const elfProgram = interpreter?.real ?? program
  const closure = await loadClosure(elfProgram, options)
  const python = PYTHON.test(path.basename(elfProgram))
  const execFromMount = !(python && kind.kind === 'elf')
  const choices: Choice[] = [execFromMount
    ? { path: program, served: true, why: 'the program: always served, and run from the mount' }
    : choose(program, 'the program, a Python interpreter: run as given, beside its virtual environment', policy)]
  if (elfProgram !== program) choices.push(choose(elfProgram, `the interpreter of ${path.basename(program)}`, policy))
  if (closure.program.elf.interpreter) {
    choices.push({ path: closure.program.elf.interpreter, served: false, why: 'the dynamic loader: the kernel maps it by this path' })
  }
  for (const o of closure.objects.slice(1)) choices.push(choose(o.path, describeFound(o), policy))
  const libDirs = [...new Set(choices.slice(1).filter((c) => c.served && c.path !== elfProgram).map((c) => path.dirname(c.path)))]
  const pythonDirs: string[] = []
  if (python) {
    for (const entry of await pythonPath(interpreter?.given ?? found, options)) {
      const choice = choose(entry, 'on Python\'s sys.path', policy)
      choices.push(choice)
      if (choice.served) pythonDirs.push(entry)
    }
  }
  const files = choices.filter((c) => c.served && !pythonDirs.includes(c.path)).map((c) => c.path)
  return { program, execFromMount, choices, files, libDirs, pythonDirs, loader: closure.program.elf.interpreter }
}

/** python, python3, python3.11: an interpreter whose imports come from sys.path. */
const PYTHON = /^python\d*(\.\d+)?$/

function choose (file: string, found: string, policy: LibsPolicy): Choice {
  const remote = remoteKindOf(file)
  if (remote) return { path: file, served: true, why: `${found}; on ${remote}` }
  if (policy === 'all') return { path: file, served: true, why: `${found}; --libs-policy all` }
  const system = isSystemPath(file)
  if (policy === 'nonsystem' && !system) return { path: file, served: true, why: `${found}; outside the system directories` }
  return { path: file, served: false, why: `${found}; ${system ? 'a system directory' : 'outside the system directories'} on a local file system` }
}

/**
 * sys.path as the interpreter sees it in this environment (its venv, PYTHONPATH, .pth files): its
 * absolute directories that exist. The interpreter is run with -c, the program never.
 */
async function pythonPath (interpreter: string, options: Pick<ClosureOptions, 'env' | 'cwd'>): Promise<string[]> {
  const { stdout } = await commandOutput(interpreter, ['-c', 'import sys, json; print(json.dumps(sys.path))'],
    { env: options.env, cwd: options.cwd, timeoutMs: 10_000 }).catch((err: Error) => {
    throw sourceError(`cannot ask ${interpreter} for its sys.path: ${err.message.split('\n')[0]}`, 'pass --libs DIR for the Python packages')
  })
  const entries = JSON.parse(stdout) as unknown
  if (!Array.isArray(entries)) throw sourceError(`${interpreter} printed no sys.path`, 'pass --libs DIR for the Python packages')
  const out: string[] = []
  for (const entry of entries) {
    if (typeof entry !== 'string' || !path.isAbsolute(entry) || out.includes(entry)) continue
    if ((await stat(entry).catch(() => undefined))?.isDirectory()) out.push(entry)
  }
  return out
}

function describeFound (o: LoadedObject): string {
  const by = o.neededBy ? path.basename(o.neededBy.path) : '?'
  const via = { program: 'the program', path: 'its path', RPATH: 'DT_RPATH', LD_LIBRARY_PATH: 'LD_LIBRARY_PATH', RUNPATH: 'DT_RUNPATH', cache: 'the loader cache', default: 'a default directory' }[o.foundBy]
  return `needed by ${by}, found through ${via}`
}

export function isSystemPath (file: string): boolean {
  return SYSTEM_DIRS.some((d) => isWithin(d, file))
}

/**
 * `#!/usr/bin/env python3` names its interpreter through PATH; any other #! line by its path.
 * `given` is the path as the kernel will start it, `real` the ELF file behind it.
 */
async function interpreterOf (interpreter: string, argument: string | undefined, { env, cwd }: Pick<ClosureOptions, 'env' | 'cwd'>, script: string): Promise<{ given: string, real: string }> {
  const viaEnv = path.basename(interpreter) === 'env' && argument !== undefined
  const name = viaEnv ? (argument.split(/\s+/).find((w) => !w.startsWith('-')) ?? '') : interpreter
  const file = await programFile(name, env, cwd)
  const real = file ? await realpath(file).catch(() => undefined) : undefined
  if (!real) throw sourceError(`${script} is run by ${name}, which is not found here`, 'install it, or give the script\'s interpreter a full path')
  const kind = readFileKind(real)
  if (kind.kind !== 'elf') throw sourceError(`${script}'s interpreter ${real} is not an ELF program`, 'pass --libs DIR')
  return { given: file as string, real }
}
