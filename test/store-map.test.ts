// A node's store (native/store-map.c): one file in node-local memory, mapped into the agent. Room
// for a piece is allocated in the file before its first block is written there (by the addon, with
// pwrite: test/peer-stream.test.ts), so a store that is full fails that allocation with the
// system's reason, never a SIGBUS at a write; what is written to the file is what the mapping reads.
import { execFileSync } from 'node:child_process'
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { requireNative } from '../lib/native.ts'

const addon = requireNative('the store test', (message, hint) => new Error(`${message} (${hint})`))
const MIB = 1 << 20

function mappedStore (t: Test, dir: string, length: number): { fd: number, bytes: Buffer } {
  const fd = openSync(path.join(dir, 'store'), 'w+')
  t.teardown(() => closeSync(fd))
  return { fd, bytes: addon.mapStore(fd, length) }
}

function tempDir (t: Test, under: string): string {
  const dir = mkdtempSync(path.join(under, 'p2prun-store-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('a range is allocated in the file, and bytes written to the file are what the mapping reads', async (t) => {
  const { fd, bytes } = mappedStore(t, tempDir(t, '/dev/shm'), 3 * 65536 + 1000)
  addon.allocateStore(fd, 65536, 2 * 65536 + 1000)
  addon.allocateStore(fd, 0, 0)
  t.ok(fstatSync(fd).blocks * 512 >= 2 * 65536 + 1000, 'the range\'s blocks are the file\'s')
  const block = Buffer.alloc(16384, 7)
  writeSync(fd, block, 0, block.length, 2 * 65536 + 1000 - 16384 + 65536)
  t.same(bytes.subarray(3 * 65536 + 1000 - 16384), block, 'the last block, through the mapping')
  t.equal(bytes[65536], 0, 'the rest of the room reads as zeros')
})

t.test('a full store is an error with the system\'s reason when room is allocated, before any write', { skip: process.getuid?.() !== 0 && 'mounting a tmpfs needs root' }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'p2prun-store-test-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'p2prun-store-test', dir])
  const fd = openSync(path.join(dir, 'store'), 'w+')
  // Lazily: the mapping keeps the file system busy until it is collected.
  t.teardown(() => { closeSync(fd); execFileSync('umount', ['-l', dir]); rmSync(dir, { recursive: true }) })
  addon.mapStore(fd, 4 * MIB)
  t.throws(() => addon.allocateStore(fd, 0, 4 * MIB), { code: 'ENOSPC', message: /cannot allocate room in the store: No space left on device/ })
  addon.allocateStore(fd, 0, 256 * 1024)
  t.pass('a range that fits is still allocated')
})

t.test('arguments of the wrong kind are refused', async (t) => {
  const { fd } = mappedStore(t, tempDir(t, '/dev/shm'), MIB)
  t.throws(() => addon.allocateStore(fd, -1, 20), TypeError)
  t.throws(() => (addon.allocateStore as (...a: unknown[]) => void)(fd, 0), TypeError)
  t.equal(fstatSync(fd).blocks, 0, 'nothing allocated')
})
