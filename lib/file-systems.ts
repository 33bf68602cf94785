// File systems by statfs f_type: which ones put a network (or a user-space server) behind every
// call. The store must not live on them; the libraries that live on them are what p2prun serves.
import { statfsSync } from 'node:fs'
import { formatBytes } from './description.ts'
import { swarmError } from './errors.ts'

/** native/agent/main.c has the same list (test/native-agent.test.ts checks that they match). */
export const REMOTE_FS_TYPES: ReadonlyMap<number, string> = new Map([
  [0x65735546, 'FUSE'], [0x6969, 'NFS'], [0xff534d42, 'CIFS'], [0xfe534d42, 'SMB2'], [0x517b, 'SMB'],
  [0x0bd00bd0, 'Lustre'], [0x47504653, 'GPFS'], [0x00c36400, 'CephFS'], [0x19830326, 'BeeGFS'],
  [0x5346414f, 'AFS'], [0x01021997, '9P'], [0xaad7aaea, 'PanFS'], [0x20030528, 'OrangeFS']
])

/** The name of the remote file system `type` is, or undefined for a local one. */
export function remoteKind (type: number): string | undefined {
  return REMOTE_FS_TYPES.get(type)
}

/** The remote file system `file` lives on, or undefined (local, or unknown: it cannot be looked at). */
export function remoteKindOf (file: string): string | undefined {
  try {
    return remoteKind(statfsSync(file).type)
  } catch {
    return undefined
  }
}

/** Whether `dir` can hold a store of `setBytes`: node-local, with room for it (either agent: the native one's parent checks for it). */
export function checkStoreDir (dir: string, setBytes: number): void {
  let st: { type: number, bavail: number, bsize: number }
  try {
    st = statfsSync(dir)
  } catch (err) {
    throw swarmError(`cannot use ${dir} as the store: ${(err as NodeJS.ErrnoException).code}`, 'pass --store-dir with a writable directory', err)
  }
  const kind = remoteKind(st.type)
  if (kind) {
    throw swarmError(`the store directory ${dir} is on ${kind}: the node agent reads and writes its store without waiting`,
      'pass --store-dir on node-local memory or disk (the default is /dev/shm)')
  }
  const free = st.bavail * st.bsize
  if (free < setBytes) {
    throw swarmError(`the store directory ${dir} has ${formatBytes(free)} free and the set needs ${formatBytes(setBytes)}`,
      'pass --store-dir with room for it, or serve less (--libs DIR, or --libs-policy network)')
  }
}
