// A system-wide head (`p2prun serve --sets DIR`): one tracker and a seeder per set, sets added and
// removed while it runs; nodes fetch each set through it; a pair that cannot be served is reported
// and skipped. Real processes over loopback; every step waits for the head's own line about it.
import { rename, rm, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { execa } from 'execa'
import t from 'tap'
import { makeTree, snapshotTree } from './helpers/fixtures.ts'
import { cleanEnv, CLI, p2prun } from './helpers/cli.ts'

t.test('sets come and go while the head runs; nodes fetch each; a bad pair is reported and skipped', async (t) => {
  const dir = t.testdir()
  const sets = path.join(dir, 'sets')
  const trees: Record<string, string> = {}
  for (const name of ['alpha', 'beta']) {
    trees[name] = await makeTree(path.join(dir, 'trees', name), { files: { [`lib${name}.so.1`]: 300_000, 'sub/libx.so': 70_000 } })
  }
  await makeTree(sets, { files: {} })
  const describe = async (name: string, into = sets) => {
    t.equal((await p2prun(['describe', trees[name] as string, '-o', path.join(dir, `${name}.tmp`)])).exitCode, 0)
    await symlink(trees[name] as string, path.join(into, name))
    await rename(path.join(dir, `${name}.tmp`), path.join(into, `${name}.p2p.torrent`)) // whole, as a writer should
  }
  await describe('alpha')
  await writeFile(path.join(sets, 'broken.p2p.torrent'), 'not a torrent')
  await symlink(trees.alpha as string, path.join(sets, 'broken'))

  const head = execa(CLI, ['serve', '--sets', sets, '--host', '127.0.0.1', '--open'], {
    env: cleanEnv(), extendEnv: false, reject: false, stdin: 'ignore', buffer: { stdout: true, stderr: true }
  })
  t.teardown(() => { head.kill('SIGTERM') })
  const lines = createInterface({ input: head.stdout })
  const seen: string[] = []
  const waiters: { pattern: RegExp, resolve: (m: RegExpMatchArray) => void }[] = []
  lines.on('line', (line) => {
    seen.push(line)
    for (const w of [...waiters]) {
      const m = line.match(w.pattern)
      if (m) { waiters.splice(waiters.indexOf(w), 1); w.resolve(m) }
    }
  })
  const line = (pattern: RegExp) => new Promise<RegExpMatchArray>((resolve) => {
    const m = seen.map((l) => l.match(pattern)).find(Boolean)
    if (m) resolve(m)
    else waiters.push({ pattern, resolve })
  })
  const tracker = (await line(/^serving sets from \S+ tracker=(\S+)$/))[1] as string
  await line(/^serving alpha infohash=[0-9a-f]{40} seeder=\S+$/)

  const fetched = async (name: string) => {
    const out = path.join(dir, `out-${name}-${Math.random().toString(36).slice(2)}`)
    const r = await p2prun(['fetch', path.join(sets, `${name}.p2p.torrent`), '--out', out, '--tracker', tracker, '--store-dir', dir, '--stall-timeout', '20'])
    t.equal(r.exitCode, 0, `${name}: ${r.stderr}`)
    t.same(await snapshotTree(out), await snapshotTree(trees[name] as string), `${name}: every file, byte for byte, through the head`)
  }
  await fetched('alpha')

  await describe('beta')
  const beta = (await line(/^serving beta infohash=([0-9a-f]{40}) seeder=\S+$/))[1] as string
  await fetched('beta')

  // A launch on 2 nodes that uses this head (--seeder): it checks the head serves the set, and its
  // nodes find the set's seeder through the tracker.
  const base = tracker.replace(/\/announce$/, '')
  const launched = await p2prun(['-n', '2', '--launcher', 'local', '--seeder', base, '--libs', trees.beta as string,
    'sh', '-c', `cmp "$P2PRUN_MOUNT/libbeta.so.1" ${path.join(trees.beta as string, 'libbeta.so.1')} && echo same`],
  { env: { P2PRUN_RUN_DIR: path.join(dir, 'run'), P2PRUN_STORE_DIR: dir, P2PRUN_NODE_PER_RANK: '1' } })
  t.equal(launched.exitCode, 0, launched.stderr)
  t.equal(launched.stdout.match(/^same$/gm)?.length, 2, 'both nodes read the library from their mount of the set')
  // The same launch by hand: --dry-run prints the spec for this head, and the launcher's command.
  const launchEnv = { P2PRUN_RUN_DIR: path.join(dir, 'run'), P2PRUN_STORE_DIR: dir, P2PRUN_NODE_PER_RANK: '1' }
  const shown = await p2prun(['--dry-run', '-n', '2', '--launcher', 'local', '--seeder', base, '--libs', trees.beta as string,
    'sh', '-c', `cmp "$P2PRUN_MOUNT/libbeta.so.1" ${path.join(trees.beta as string, 'libbeta.so.1')} && echo same`], { env: launchEnv })
  t.equal(shown.exitCode, 0, shown.stderr)
  t.match(shown.stdout, /^P2PRUN_JOB=\S+; export P2PRUN_JOB\n\S+ local-ranks -n 2 -- \S+\/p2prun-rank sh -c 'cmp /)
  const byHand = await execa('sh', ['-e', '-c', shown.stdout], { env: cleanEnv(launchEnv), extendEnv: false, reject: false, stdin: 'ignore' })
  t.equal(byHand.exitCode, 0, String(byHand.stderr))
  t.equal(String(byHand.stdout).match(/^same$/gm)?.length, 2, 'run as printed: both nodes read it from their mount')

  const alpha = (seen.map((l) => l.match(/^serving alpha infohash=([0-9a-f]{40})/)).find(Boolean) as RegExpMatchArray)[1] as string
  await rm(path.join(sets, 'alpha.p2p.torrent'))
  await line(new RegExp(`^stopped alpha infohash=${alpha}$`))
  t.equal((await fetch(`${base}/p2prun/${alpha}.torrent`)).status, 404, 'a removed set\'s description is gone')
  t.equal((await fetch(`${base}/p2prun/${beta}.torrent`)).status, 200, 'the other set stays')

  head.kill('SIGTERM')
  const r = await head
  t.equal(r.exitCode, 0, String(r.stderr))
  t.match(String(r.stderr), /^p2prun serve: warning: broken: .*broken\.p2p\.torrent/m, 'the bad pair, once, by name')
  t.equal(String(r.stderr).match(/warning: broken:/g)?.length, 1)
})

t.test('serve takes a description and its source, or --sets alone', async (t) => {
  const dir = t.testdir()
  for (const args of [['serve'], ['serve', '--sets', dir, 'x.p2p.torrent'], ['serve', 'x.p2p.torrent']]) {
    const r = await p2prun(args, { env: { P2PRUN_SECRET: 'ab'.repeat(32) } })
    t.same([r.exitCode, r.stderr], [2, 'p2prun serve: error: give a description and its source, or --sets alone (hint: p2prun serve FILE --source DIR, or p2prun serve --sets DIR)'], args.join(' '))
  }
  const dht = await p2prun(['serve', '--sets', dir, '--open', '--discovery', 'dht'])
  t.same([dht.exitCode, dht.stderr], [2, 'p2prun serve: error: a system-wide head (--sets) has a tracker only: --discovery dht serves one set (hint: leave out --discovery, or serve the set on its own: p2prun serve FILE --source DIR --discovery dht)'])
  const missing = await p2prun(['serve', '--sets', path.join(dir, 'none'), '--open'])
  t.same([missing.exitCode, missing.stderr], [2, `p2prun serve: error: --sets ${path.join(dir, 'none')} is not a directory (hint: create it, then put NAME.p2p.torrent beside NAME there)`])
})
