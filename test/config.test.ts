import path from 'node:path'
import t from 'tap'
import { envNameOf, loadConfig } from '../lib/config.ts'

t.test('defaults, then YAML, then environment, then flags', async (t) => {
  const root = t.testdir({ conf: { 'p2prun.yaml': 'max-conns: 10\nnumwant: 11\nstall-timeout: 12\nstore-dir: rel/store\n' }, empty: {} })
  const dir = path.join(root, 'conf')
  const defaults = await loadConfig({ flags: {}, env: {}, cwd: path.join(root, 'empty') })
  t.match(defaults, { maxConns: 100, numwant: 8, stallTimeoutMs: 60_000, storeDir: '/dev/shm', trackerMaxPeers: 20_000, trackerAnnouncePeers: 200 })
  const yaml = await loadConfig({ flags: {}, env: {}, cwd: dir })
  t.match(yaml, { maxConns: 10, numwant: 11, stallTimeoutMs: 12_000, storeDir: path.join(dir, 'rel/store') })
  const env = await loadConfig({ flags: {}, env: { P2PRUN_NUMWANT: '21', P2PRUN_MAX_CONNS: '20' }, cwd: dir })
  t.match(env, { maxConns: 20, numwant: 21, stallTimeoutMs: 12_000 })
  const flags = await loadConfig({ flags: { 'max-conns': '30', quiet: true, 'store-dir': 'mine' }, env: { P2PRUN_MAX_CONNS: '20' }, cwd: root, configFile: 'conf/p2prun.yaml' })
  t.match(flags, { maxConns: 30, numwant: 11, quiet: true, storeDir: path.join(root, 'mine') })
  t.ok(Object.isFrozen(flags))
})

t.test('--config and P2PRUN_CONFIG name the file; a named file must exist', async (t) => {
  const dir = t.testdir({ 'site.yaml': 'verify-source: yes\n' })
  t.equal((await loadConfig({ flags: {}, env: {}, cwd: dir, configFile: 'site.yaml' })).verifySource, true)
  t.equal((await loadConfig({ flags: {}, env: { P2PRUN_CONFIG: path.join(dir, 'site.yaml') }, cwd: '/' })).verifySource, true)
  await t.rejects(loadConfig({ flags: {}, env: {}, cwd: dir, configFile: 'missing.yaml' }), { code: 'CONFIG', message: /cannot read config file .*missing\.yaml: ENOENT/ })
})

t.test('invalid values name where they came from', async (t) => {
  const root = t.testdir({ list: { 'p2prun.yaml': '[1, 2]\n' }, empty: {} })
  await t.rejects(loadConfig({ flags: {}, env: {}, cwd: path.join(root, 'list') }), { message: /must be a mapping of settings/ })
  const empty = path.join(root, 'empty')
  await t.rejects(loadConfig({ flags: { 'tracker-port': '70000' }, env: {}, cwd: empty }), { message: /--tracker-port: 70000 is out of range \(0\.\.65535\)/ })
  await t.rejects(loadConfig({ flags: {}, env: { P2PRUN_QUIET: 'maybe' }, cwd: empty }), { message: /P2PRUN_QUIET: expected true or false, got "maybe"/ })
  await t.rejects(loadConfig({ flags: { numwant: '1.5' }, env: {}, cwd: empty }), { message: /--numwant: expected a whole number/ })
  t.equal(envNameOf('tracker-announce-peers'), 'P2PRUN_TRACKER_ANNOUNCE_PEERS')
  t.same((await loadConfig({ flags: { owner: '1000' }, env: {}, cwd: empty })).owner, { uid: 1000, gid: 1000 })
  t.same((await loadConfig({ flags: {}, env: { P2PRUN_OWNER: '7:9' }, cwd: empty })).owner, { uid: 7, gid: 9 })
  await t.rejects(loadConfig({ flags: { owner: 'alice' }, env: {}, cwd: empty }), { message: /--owner: expected UID or UID:GID \(numbers\), got "alice"/ })
})

t.test('the site file (/etc/p2prun/p2prun.yaml, or P2PRUN_SITE_CONFIG) is below the user\'s file, the environment and flags', async (t) => {
  const root = t.testdir({ etc: { 'p2prun.yaml': 'numwant: 5\nmax-conns: 6\nstore-dir: store\nmode: block\n' }, job: { 'p2prun.yaml': 'max-conns: 7\n' } })
  const site = path.join(root, 'etc/p2prun.yaml')
  const job = path.join(root, 'job')
  const config = await loadConfig({ flags: { mode: 'file' }, env: { P2PRUN_SITE_CONFIG: site, P2PRUN_NUMWANT: '8' }, cwd: job })
  t.match(config, { numwant: 8, maxConns: 7, mode: 'file', storeDir: path.join(root, 'etc/store') }, 'env, user file and flag win; a relative path is the site file\'s')
  t.equal((await loadConfig({ flags: {}, env: { P2PRUN_SITE_CONFIG: site }, cwd: job })).mode, 'block', 'the site decides what no one else says')
  await t.rejects(loadConfig({ flags: {}, env: { P2PRUN_SITE_CONFIG: path.join(root, 'none.yaml') }, cwd: job }), { code: 'CONFIG', message: /cannot read config file .*none\.yaml: ENOENT/ })
  await t.rejects(loadConfig({ flags: {}, env: { P2PRUN_SITE_CONFIG: path.join(job, 'p2prun.yaml') }, cwd: root, configFile: site.replace('p2prun.yaml', 'x.yaml') }), { code: 'CONFIG' })
})

t.test('libs is parsed into directories once: ":"-separated or a YAML list, relative to where written, auto kept', async (t) => {
  const root = t.testdir({ conf: { 'p2prun.yaml': 'libs: [libs, auto, /opt/x]\n' }, empty: {} })
  const empty = path.join(root, 'empty')
  t.same((await loadConfig({ flags: {}, env: { P2PRUN_LIBS: 'a::auto:/b' }, cwd: empty })).libs, [path.join(empty, 'a'), 'auto', '/b'])
  t.same((await loadConfig({ flags: {}, env: {}, cwd: path.join(root, 'conf') })).libs, [path.join(root, 'conf/libs'), 'auto', '/opt/x'])
  t.equal((await loadConfig({ flags: {}, env: {}, cwd: empty })).libs, undefined, 'none: the launch decides (auto)')
  await t.rejects(loadConfig({ flags: {}, env: { P2PRUN_LIBS: ':' }, cwd: empty }), { message: /P2PRUN_LIBS: expected directories separated by ":", got ":"/ })
})

t.test('the launcher is one of a closed set, checked with the other settings', async (t) => {
  const empty = t.testdir({})
  t.equal((await loadConfig({ flags: {}, env: {}, cwd: empty })).launcher, 'auto')
  t.equal((await loadConfig({ flags: { launcher: 'mpich' }, env: {}, cwd: empty })).launcher, 'mpich')
  await t.rejects(loadConfig({ flags: {}, env: { P2PRUN_LAUNCHER: 'pbsdsh' }, cwd: empty }),
    { code: 'CONFIG', message: /P2PRUN_LAUNCHER: expected one of auto, local, openmpi, mpich, srun, got "pbsdsh"/ })
})
