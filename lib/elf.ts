// Reads what the dynamic loader reads from an ELF file before it maps it: class, machine, the
// interpreter, and the dynamic section's DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME and DT_FLAGS_1.
// Only those few regions are read (a library can be hundreds of MB), each bounded, so a hostile or
// truncated file gives a clear error and never a huge allocation. The reads are synchronous: a
// closure of 200 libraries is ~1,400 small reads, which through the thread pool cost the launcher
// twice the time; nothing else runs in the launcher while it looks (it serves no FUSE).
import { closeSync, openSync, readSync } from 'node:fs'
import { sourceError } from './errors.ts'

export interface ElfInfo {
  /** 32 or 64. */
  readonly bits: 32 | 64
  readonly machine: number
  /** PT_INTERP: the dynamic loader a program asks for; undefined for libraries and static programs. */
  readonly interpreter: string | undefined
  /** Whether it has a dynamic section (a static program has none). */
  readonly dynamic: boolean
  readonly needed: readonly string[]
  readonly rpath: readonly string[]
  readonly runpath: readonly string[]
  readonly soname: string | undefined
  /** DF_1_NODEFLIB: the loader's cache and default directories are not searched for its needs. */
  readonly noDefaultLib: boolean
}

/** What a file starts with, for the programs that are not ELF. */
export type FileKind = { kind: 'elf', info: ElfInfo } | { kind: 'script', interpreter: string, argument: string | undefined } | { kind: 'other' }

const EM_NAMES: ReadonlyMap<number, string> = new Map([
  [3, 'x86 (i386)'], [8, 'MIPS'], [20, 'PowerPC'], [21, 'PowerPC 64'], [22, 'S/390'], [40, 'ARM'],
  [62, 'x86-64'], [183, 'AArch64'], [243, 'RISC-V'], [258, 'LoongArch']
])
const HOST_MACHINE: Readonly<Record<string, number>> = { x64: 62, arm64: 183, ppc64: 21, riscv64: 243, s390x: 22, loong64: 258, ia32: 3, arm: 40 }

/** This host's ELF machine and class: what its loader maps. */
export const HOST_ELF = { bits: (process.arch === 'ia32' || process.arch === 'arm' ? 32 : 64) as 32 | 64, machine: HOST_MACHINE[process.arch] ?? -1 }

export function machineName (machine: number): string {
  return EM_NAMES.get(machine) ?? `machine ${machine}`
}

const PT_LOAD = 1
const PT_DYNAMIC = 2
const PT_INTERP = 3
const DT_NEEDED = 1
const DT_STRTAB = 5
const DT_STRSZ = 10
const DT_SONAME = 14
const DT_RPATH = 15
const DT_RUNPATH = 29
const DT_FLAGS_1 = 0x6ffffffb
const DF_1_NODEFLIB = 0x800

const MAX_HEADERS = 64 * 1024
const MAX_DYNAMIC = 1024 * 1024
const MAX_STRINGS = 16 * 1024 * 1024
const MAX_INTERP = 4096

/** Whether the file is ELF, a `#!` script, or neither; ELF files are parsed. */
export function readFileKind (file: string): FileKind {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (err) {
    throw sourceError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, 'make it readable by the user running p2prun', err)
  }
  try {
    const head = readAt(fd, 0, 256, file, true)
    if (head.subarray(0, 4).equals(ELF_MAGIC)) return { kind: 'elf', info: parse(fd, file) }
    if (head[0] === 0x23 && head[1] === 0x21) {
      // The kernel takes the first line: the interpreter, then at most one argument.
      const line = head.subarray(2, head.includes(10) ? head.indexOf(10) : head.length).toString('utf8').trim()
      const [interpreter, ...rest] = line.split(/[ \t]+/)
      if (interpreter) return { kind: 'script', interpreter, argument: rest.length > 0 ? rest.join(' ') : undefined }
    }
    return { kind: 'other' }
  } finally {
    closeSync(fd)
  }
}

/** An ELF file's loader-relevant facts; fails with a clear error if it is not ELF or is damaged. */
export function readElf (file: string): ElfInfo {
  const kind = readFileKind(file)
  if (kind.kind !== 'elf') throw sourceError(`${file} is not an ELF file`, 'a library or program built for this system is')
  return kind.info
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46])

function parse (fd: number, file: string): ElfInfo {
  const damaged = (what: string) => sourceError(`${file} is a damaged ELF file (${what})`, 'rebuild or reinstall it')
  const ident = readAt(fd, 0, 64, file, true)
  const bits = ident[4] === 1 ? 32 : ident[4] === 2 ? 64 : undefined
  if (bits === undefined) throw damaged('unknown class')
  if (ident.length < (bits === 64 ? 64 : 52)) throw damaged('truncated')
  if (ident[5] !== 1 && ident[5] !== 2) throw damaged('unknown byte order')
  const le = ident[5] === 1
  const u16 = (b: Buffer, o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o))
  const u32 = (b: Buffer, o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o))
  const word = (b: Buffer, o: number) => (bits === 64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(b, o))
  const machine = u16(ident, 18)
  const phoff = bits === 64 ? word(ident, 32) : u32(ident, 28)
  const phentsize = u16(ident, bits === 64 ? 54 : 42)
  const phnum = u16(ident, bits === 64 ? 56 : 44)
  const minEntry = bits === 64 ? 56 : 32
  if (phnum > 0 && phentsize < minEntry) throw damaged('program header size')
  if (phnum * phentsize > MAX_HEADERS) throw damaged('too many program headers')
  const ph = readAt(fd, phoff, phnum * phentsize, file)

  interface Segment { type: number, offset: number, vaddr: number, filesz: number }
  const segments: Segment[] = []
  for (let i = 0; i < phnum; i++) {
    const o = i * phentsize
    segments.push(bits === 64
      ? { type: u32(ph, o), offset: word(ph, o + 8), vaddr: word(ph, o + 16), filesz: word(ph, o + 32) }
      : { type: u32(ph, o), offset: u32(ph, o + 4), vaddr: u32(ph, o + 8), filesz: u32(ph, o + 16) })
  }
  const interp = segments.find((s) => s.type === PT_INTERP)
  const interpreter = interp
    ? cString(readAt(fd, interp.offset, Math.min(interp.filesz, MAX_INTERP), file), 0)
    : undefined
  const dyn = segments.find((s) => s.type === PT_DYNAMIC)
  const none = { bits, machine, interpreter, needed: [], rpath: [], runpath: [], soname: undefined, noDefaultLib: false } as const
  if (!dyn) return { ...none, dynamic: false }
  if (dyn.filesz > MAX_DYNAMIC) throw damaged('dynamic section too large')
  const dynamic = readAt(fd, dyn.offset, dyn.filesz, file)

  const entrySize = bits === 64 ? 16 : 8
  const tags: { tag: number, value: number }[] = []
  for (let o = 0; o + entrySize <= dynamic.length; o += entrySize) {
    const tag = bits === 64 ? Number(le ? dynamic.readBigInt64LE(o) : dynamic.readBigInt64BE(o)) : u32(dynamic, o)
    if (tag === 0) break
    tags.push({ tag, value: word(dynamic, o + entrySize / 2) })
  }
  const value = (tag: number) => tags.find((t) => t.tag === tag)?.value
  const strtabAddr = value(DT_STRTAB)
  const strsz = value(DT_STRSZ) ?? 0
  if (strtabAddr === undefined) return { ...none, dynamic: true }
  // DT_STRTAB is an address in memory: the load segment holding it says where it lies in the file.
  const load = segments.find((s) => s.type === PT_LOAD && strtabAddr >= s.vaddr && strtabAddr < s.vaddr + s.filesz)
  if (!load) throw damaged('string table outside every segment')
  if (strsz > MAX_STRINGS) throw damaged('string table too large')
  const strings = readAt(fd, load.offset + (strtabAddr - load.vaddr), strsz, file)
  const str = (offset: number) => {
    if (offset >= strings.length) throw damaged('string offset out of range')
    return cString(strings, offset)
  }
  const all = (tag: number) => tags.filter((t) => t.tag === tag).map((t) => str(t.value))
  const soname = value(DT_SONAME)
  return {
    bits,
    machine,
    interpreter,
    dynamic: true,
    needed: all(DT_NEEDED),
    rpath: all(DT_RPATH).flatMap((p) => p.split(':')),
    runpath: all(DT_RUNPATH).flatMap((p) => p.split(':')),
    soname: soname === undefined ? undefined : str(soname),
    noDefaultLib: ((value(DT_FLAGS_1) ?? 0) & DF_1_NODEFLIB) !== 0
  }
}

/** Exactly `length` bytes at `position`, or a clear error (short: `partial` allows it, for the first look). */
function readAt (fd: number, position: number, length: number, file: string, partial = false): Buffer {
  const buf = Buffer.alloc(length)
  if (length === 0) return buf
  const bytesRead = readSync(fd, buf, 0, length, position)
  if (bytesRead < length && !partial) throw sourceError(`${file} is a damaged ELF file (truncated)`, 'rebuild or reinstall it')
  return buf.subarray(0, bytesRead)
}

function cString (buf: Buffer, offset: number): string {
  const end = buf.indexOf(0, offset)
  return buf.subarray(offset, end === -1 ? buf.length : end).toString('utf8')
}
