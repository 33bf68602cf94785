// file mode with a file big and slow enough that open takes longer than any per-operation timeout
// would allow (fuse-native's was 15 s; the native server has none).
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { job, mountAgent, nodeArgs } from './helpers/mount.ts'

const run = promisify(execFile)

t.test('file mode: a 200 MB file over a 12 MB/s head link opens (>15 s: no per-operation timeout) and reads correctly', async (t) => {
  const content = randomBytes(200 * 1000 * 1000)
  const j = await job(t, async (dir) => {
    await mkdir(path.join(dir, 'libs'))
    await writeFile(path.join(dir, 'libs/libhuge.so'), content)
    return path.join(dir, 'libs')
  }, ['--upload-limit', String(12 * 1000 * 1000)])
  const mnt = path.join(j.dir, 'mnt')
  const agent = await mountAgent(j, j.file, mnt, path.join(j.dir, 'stats.json'), nodeArgs(j, 'file'))
  const started = performance.now()
  const { stdout } = await run('sha256sum', [path.join(mnt, 'libhuge.so')])
  const seconds = (performance.now() - started) / 1000
  t.equal(stdout.split(' ')[0], createHash('sha256').update(content).digest('hex'), `identical after ${seconds.toFixed(1)} s`)
  const { stats } = await agent.stop()
  t.equal(stats.fs.readErrors, 0)
  t.equal(stats.fs.bytesServedAfterFetch, 0, 'every read was local once open returned')
})

