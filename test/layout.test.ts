// The run directory has one owner, lib/session/node-state.ts: no other module of p2prun names a
// file in it, and the SPANK plugin (C, outside the TypeScript) reads only the one file that module
// documents for it. Read as text, the way a reviewer would grep.
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { ROOT } from './helpers/cli.ts'

const OWNER = 'lib/session/node-state.ts'
/** The names node-state.ts gives the run directory's files, and how other code would spell them. */
const RUN_DIR_NAMES = ['agent.lock', 'agent.log', 'ready.json', 'failed.json', 'task-env', "'ranks'", "'reported'", '`job-', "'job-", '}@${']

async function sources (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const entry of await readdir(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name)
    if (entry.isDirectory()) out.push(...await sources(rel))
    else if (/\.(ts|c|sh)$/.test(entry.name) || dir === 'bin' || dir === 'hooks') out.push(rel)
  }
  return out
}

t.test('no module but lib/session/node-state.ts names a file of the run directory', async (t) => {
  const files = (await Promise.all(['lib', 'launcher', 'bin', 'hooks', 'scripts'].map(sources))).flat()
  t.ok(files.includes(OWNER) && files.length > 40, `the scan sees the sources (${files.length} files)`)
  const owner = await readFile(path.join(ROOT, OWNER), 'utf8')
  for (const name of ['agent.lock', 'agent.log', 'ready.json', 'failed.json', 'task-env']) t.ok(owner.includes(name), `the owner names ${name}`)
  const offenders: string[] = []
  for (const file of files.filter((f) => f !== OWNER)) {
    const text = await readFile(path.join(ROOT, file), 'utf8')
    for (const name of RUN_DIR_NAMES) if (text.includes(name)) offenders.push(`${file}: ${name}`)
  }
  t.same(offenders, [], 'nobody else names one')
})

t.test('the SPANK plugin reads the one file node-state.ts documents for it, and no other', async (t) => {
  const plugin = await readFile(path.join(ROOT, 'slurm/p2plibs.c'), 'utf8')
  const owner = await readFile(path.join(ROOT, OWNER), 'utf8')
  t.match(owner, /task-env\s+[^]*?the one file slurm\/p2plibs\.c reads/, 'node-state.ts documents task-env as the plugin\'s file')
  t.match(plugin, /"%s\/job-slurm-%u-%s\/task-env"/, 'the plugin builds that path')
  for (const name of RUN_DIR_NAMES.filter((n) => n !== 'task-env' && !n.includes('job-'))) t.notOk(plugin.includes(name), `no ${name}`)
})
