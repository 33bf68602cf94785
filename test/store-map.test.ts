// A node's store mapped into the agent (native/store-map.c): room for a piece is allocated in the
// file when the piece is first asked for, and its pages enter the agent's page tables in the same
// call, so the writes that follow do not trap once per page. Counted as the process's minor page
// faults while a range is written, against a range written without allocateStore.
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import path from 'node:path'
import t, { type Test } from 'tap'
import { requireNative } from '../lib/native.ts'

const addon = requireNative('the store test', (message, hint) => new Error(`${message} (${hint})`))
const MIB = 1 << 20
const PAGES = (4 * MIB) / 4096

function mappedStore (t: Test, length: number): { fd: number, bytes: Buffer } {
  const dir = mkdtempSync('/dev/shm/p2prun-store-test-')
  const fd = openSync(path.join(dir, 'store'), 'w+')
  t.teardown(() => { closeSync(fd); rmSync(dir, { recursive: true, force: true }) })
  return { fd, bytes: addon.mapStore(fd, length) }
}

/** Minor page faults of this process while `write` runs. */
function faultsDuring (write: () => void): number {
  const before = process.resourceUsage().minorPageFault
  write()
  return process.resourceUsage().minorPageFault - before
}

t.test('an allocated range is the file\'s and is written without a fault per page; an unallocated one faults page by page', async (t) => {
  const { fd, bytes } = mappedStore(t, 8 * MIB)
  addon.allocateStore(bytes, fd, 4 * MIB, 4 * MIB)
  t.ok(fstatSync(fd).blocks * 512 >= 4 * MIB, 'the range\'s blocks are allocated in the file')
  const allocated = faultsDuring(() => bytes.fill(1, 4 * MIB, 8 * MIB))
  const unallocated = faultsDuring(() => bytes.fill(2, 0, 4 * MIB))
  t.ok(unallocated > PAGES / 2, `writing ${PAGES} pages not allocated first faulted ${unallocated} times (the measure sees faults)`)
  t.ok(allocated < PAGES / 16, `writing ${PAGES} allocated pages faulted ${allocated} times`)
  t.equal(bytes[4 * MIB], 1)
  t.equal(bytes[8 * MIB - 1], 1)
})

t.test('a range that is not page-aligned or ends the set unevenly is allocated whole; nothing is done for an empty one', async (t) => {
  const length = 3 * 65536 + 1000
  const { fd, bytes } = mappedStore(t, length)
  addon.allocateStore(bytes, fd, 65536 + 100, length - 65536 - 100)
  addon.allocateStore(bytes, fd, 0, 0)
  bytes.fill(7, 65536 + 100)
  t.equal(bytes[length - 1], 7)
  t.ok(fstatSync(fd).blocks * 512 >= length - 65536 - 100)
})

t.test('a range outside the mapping, or arguments of the wrong kind, are refused before anything is allocated', async (t) => {
  const { fd, bytes } = mappedStore(t, MIB)
  t.throws(() => addon.allocateStore(bytes, fd, MIB - 10, 20), /a range inside it/)
  t.throws(() => addon.allocateStore(bytes, fd, -1, 20), /a range inside it/)
  t.throws(() => (addon.allocateStore as (...a: unknown[]) => void)(fd, 0, 20), /a range inside it/)
  t.equal(fstatSync(fd).blocks, 0, 'nothing allocated')
})
