// Discovery from the job's node list (lib/swarm/node-list.ts): nodes that dial the peers the list
// picks for them, over real TCP on loopback, with the head's seeder and no tracker asked; the
// mount's --node-list flags and their errors; a launch's list, from Slurm or from the hosts an MPI
// launcher is given (lib/session/launch-nodes.ts, launcher/launchers/hosts.ts).
import { readdir, readFile, writeFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import t, { type Test } from 'tap'
import { parseDescription } from '../lib/description.ts'
import { extractTree } from '../lib/extract.ts'
import { dialsHead, HEAD_DIALERS, listedPeers, nodeListOf } from '../lib/swarm/node-list.ts'
import { SwarmNode } from '../lib/swarm/node.ts'
import { compressHostlist, expandHostlist, launchNodeList } from '../lib/session/launch-nodes.ts'
import { mpich } from '../launcher/launchers/mpich.ts'
import { openmpi } from '../launcher/launchers/openmpi.ts'
import { describedTree, p2prun, serve } from './helpers/cli.ts'
import { snapshotTree } from './helpers/fixtures.ts'
import { mountAgent } from './helpers/mount.ts'
import { freePorts } from './helpers/ports.ts'
import { scratch } from './helpers/scratch.ts'

const SEED = Buffer.from('0123456789abcdef0123', 'latin1')

/** A TCP listener standing in for a tracker: counts who connects, answers nothing. */
async function countingTracker (t: Test): Promise<{ url: string, connections: () => number }> {
  let connections = 0
  const server = net.createServer((socket) => { connections++; socket.destroy() })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/announce`, connections: () => connections }
}

t.test('the peers a node dials: its ring neighbours 1, 2, 4… places on and 3 drawn from the seed, never itself, the same on every node', async (t) => {
  const peers = listedPeers(1000, 10, SEED)
  t.same(peers.slice(0, 10), [11, 12, 14, 18, 26, 42, 74, 138, 266, 522], 'the ring: 1, 2, 4 … 512 places on')
  t.equal(peers.length, 13, '10 ring neighbours and 3 drawn')
  t.equal(new Set(peers).size, peers.length, 'no place twice')
  t.notOk(peers.includes(10), 'not itself')
  t.same(listedPeers(1000, 10, SEED), peers, 'the same list from the same seed: every node computes the same graph')
  t.not(listedPeers(1000, 10, Buffer.from('another seed, 20 b..', 'latin1')).slice(10).join(), peers.slice(10).join(), 'another set, other draws')
  t.same(listedPeers(995, 994, SEED).slice(0, 3), [0, 1, 3], 'around the ring past the end')
  t.same(listedPeers(4, 1, SEED).sort(), [0, 2, 3], 'a small job: everyone else')
  t.same(listedPeers(1, 0, SEED), [], 'alone: no one')
})

t.test('the nodes that dial the head: all of a small job, HEAD_DIALERS spread over a large one', async (t) => {
  const count = (n: number) => Array.from({ length: n }, (_, i) => i).filter((i) => dialsHead(n, i)).length
  t.equal(count(8), 8)
  t.equal(count(HEAD_DIALERS), HEAD_DIALERS)
  t.equal(count(40), 20, '40 nodes: every second one')
  t.equal(count(16_000), HEAD_DIALERS)
})

t.test('a node list is checked: host:port entries, each once, the index one of them', async (t) => {
  t.same(nodeListOf(['10.0.0.1:6881', '10.0.0.2:6881'], 1), { nodes: ['10.0.0.1:6881', '10.0.0.2:6881'], index: 1 })
  t.throws(() => nodeListOf([], 0), /^the node list names no node$/)
  t.throws(() => nodeListOf(['10.0.0.1'], 0), /^the node list, entry 1: "10.0.0.1" is not host:port$/)
  t.throws(() => nodeListOf(['a:1', 'a:1'], 0), /^the node list names a:1 twice$/)
  t.throws(() => nodeListOf(['a:1', 'b:1'], 2), /^node index 2 is not in the node list \(2 nodes\)$/)
})

t.test('a Slurm job\'s node list: its hostlist expanded in order, this node found by name, node K at the host template and port + K', async (t) => {
  t.same(expandHostlist('n[1-3,7],gpu[01-02],login'), ['n1', 'n2', 'n3', 'n7', 'gpu01', 'gpu02', 'login'])
  t.same(expandHostlist('r[1-2]n[08-09]'), ['r1n08', 'r1n09', 'r2n08', 'r2n09'], 'two ranges: every pair, zero padding kept')
  t.same(expandHostlist('node'), ['node'])
  for (const bad of ['n[1-', 'n[a-b]', 'n[3-1]', 'n]1[']) {
    t.throws(() => expandHostlist(bad), { message: `the job's node list ${JSON.stringify(bad)} is not a Slurm hostlist`, hint: 'expected names like n[01-16],gpu3' }, bad)
  }
  t.same(await launchNodeList({ SLURM_JOB_NODELIST: 'n[1-4]' }, 'n3', { host: '%n-ib', port: 7000 }), { nodes: ['n1-ib:7000', 'n2-ib:7001', 'n3-ib:7002', 'n4-ib:7003'], index: 2 })
  await t.rejects(launchNodeList({ SLURM_JOB_NODELIST: 'n[1-4]' }, 'n9', { host: '%n', port: 7000 }), { message: 'this node (n9) is not in the launch\'s node list n[1-4]', hint: 'check SLURMD_NODENAME against the job\'s nodes' })
  await t.rejects(launchNodeList({}, 'n1', { host: '%n', port: 7000 }), /SLURM_JOB_NODELIST is not set/)
  await t.rejects(launchNodeList({ SLURM_JOB_NODELIST: 'n[1-10]' }, 'n1', { host: '%n', port: 65530 }), /^--node-port 65530 leaves no port for the job's node 10 \(65539\)$/)
})

t.test('a launch\'s node list from the spec\'s names: this node found by its name, its short name, or an address of its own', async (t) => {
  const spec = (names: string) => ({ host: '%n', port: 7000, names })
  t.same(await launchNodeList({ SLURM_JOB_NODELIST: 'other[1-9]' }, 'n2', spec('n[1-3]')), { nodes: ['n1:7000', 'n2:7001', 'n3:7002'], index: 1 }, 'the spec\'s names, not Slurm\'s')
  t.equal((await launchNodeList({}, 'n2', spec('n1.hpc,n2.hpc'))).index, 1, 'a hostfile\'s full names for a host called by its short name')
  t.equal((await launchNodeList({}, 'n2.hpc', spec('n1,n2'))).index, 1, 'and the other way')
  t.equal((await launchNodeList({}, 'n2', spec('10.255.0.[1-2],127.0.0.1'))).index, 2, 'an address of this host\'s (loopback here)')
  t.equal((await launchNodeList({}, 'n2', spec('10.255.0.1,localhost'))).index, 1, 'localhost')
  // This host's own address before a loopback name: in a list of one host's, localhost means this one only if nothing else does.
  const own = Object.values(os.networkInterfaces()).flat().find((a) => a && !a.internal && a.family === 'IPv4')?.address
  if (own === undefined) t.pass('skipped: this host has no non-loopback IPv4 address', { skip: true })
  else t.equal((await launchNodeList({}, 'n2', spec(`localhost,${own}`))).index, 1, `its address (${own}) before localhost`)
  await t.rejects(launchNodeList({}, 'n9', spec('10.255.0.[1-2]')), {
    message: 'this node (n9) is not in the launch\'s node list 10.255.0.[1-2]',
    hint: 'name the nodes to the launcher (-H, --hostfile) as they call themselves (hostname) or by address'
  })
})

t.test('names travel as a hostlist: runs of numbered names become ranges, and expand back in their order', async (t) => {
  t.equal(compressHostlist(['10.77.1.1', '10.77.1.2', '10.77.1.3']), '10.77.1.[1-3]')
  t.equal(compressHostlist(['n001', 'n002', 'n004', 'gpu1', 'login', 'n8', 'n9', 'n10']), 'n[001-002],n004,gpu1,login,n[8-9],n10')
  const many = Array.from({ length: 16000 }, (_, i) => `node${String(i + 1).padStart(5, '0')}`)
  t.equal(compressHostlist(many), 'node[00001-16000]', '16,000 nodes in 17 characters')
  for (const names of [many, ['a', 'b1', 'b2', 'b1x', 'c9', 'c10', 'c11'], ['n2', 'n1'], ['localhost']]) {
    t.same(expandHostlist(compressHostlist(names)), names, names.slice(0, 4).join(','))
  }
  t.throws(() => compressHostlist(['a,b']), { message: '"a,b" cannot be a node\'s name', hint: 'node names have no brackets, commas or spaces' })
})

t.test('an MPI launch\'s hosts: its host lists, else its hostfiles, else the allocation, else this host; each once, in order', async (t) => {
  const s = await scratch(t)
  const hostfile = path.join(s.dir, 'hosts')
  await writeFile(hostfile, 'n2 slots=4 # rack 1\n# n9\n\n  n1:2\nn2\nn3 max_slots=2\n')
  const cwd = s.dir
  t.same(await openmpi.hosts?.(['-n', '8', '-H', 'a:2,b', '--host', 'c,a', '--hostfile', hostfile], {}, cwd), ['a', 'b', 'c'], 'Open MPI: -H over the hostfile')
  t.same(await openmpi.hosts?.(['--hostfile=hosts', '-np', '4'], {}, cwd), ['n2', 'n1', 'n3'], 'Open MPI: a hostfile relative to the working directory')
  t.same(await openmpi.hosts?.(['-machinefile', hostfile], {}, cwd), ['n2', 'n1', 'n3'])
  t.same(await mpich.hosts?.(['-hosts', 'x:2,y'], {}, cwd), ['x', 'y'], 'Hydra: -hosts')
  t.same(await mpich.hosts?.(['-f', 'hosts'], {}, cwd), ['n2', 'n1', 'n3'], 'Hydra: -f')
  t.same(await mpich.hosts?.([], { HYDRA_HOST_FILE: hostfile }, cwd), ['n2', 'n1', 'n3'], 'Hydra: HYDRA_HOST_FILE')
  t.same(await openmpi.hosts?.([], { SLURM_JOB_ID: '7', SLURM_JOB_NODELIST: 'c[1-2]' }, cwd), ['c1', 'c2'], 'a Slurm allocation')
  t.same(await mpich.hosts?.([], { PBS_NODEFILE: hostfile }, cwd), ['n2', 'n1', 'n3'], 'a PBS node file')
  t.same(await openmpi.hosts?.(['-n', '4'], {}, cwd), ['localhost'], 'no hosts: this one')
  await t.rejects(openmpi.hosts?.(['--hostfile', 'missing'], {}, cwd) as Promise<string[]>,
    { message: `cannot read the hostfile ${path.join(cwd, 'missing')}: ENOENT`, hint: 'give --discovery nodes the launcher\'s hostfile, readable here' })
})

t.test('--discovery nodes needs a launch: serve and a dry run without --seeder refuse it in one line, and so do localhost among other hosts and each rank a node', async (t) => {
  const { libs, file } = await describedTree(t, { files: { 'liba.so': 1000 } })
  const served = await p2prun(['serve', file, '--source', libs, '--open', '--discovery', 'nodes'])
  t.equal(served.exitCode, 2)
  t.match(served.stderr, /^p2prun serve: error: --discovery nodes takes the peers from the launch's node list, which a head on its own does not know \(hint: give it to p2prun -n \(it reads the launcher's hosts\) or to a --p2plibs job, or use --discovery tracker or dht here\)$/)
  const dry = await p2prun(['--discovery', 'nodes', '--dry-run', '--libs', libs, '--launcher', 'local', '-n', '1', '/bin/true'])
  t.equal(dry.exitCode, 2)
  t.match(dry.stderr, /^p2prun: error: --dry-run starts the head with `p2prun head`, which cannot know the launch's nodes for --discovery nodes \(hint: give --seeder URL of a running `p2prun serve` \(the dry run then prints the spec itself\), or use --discovery tracker\)$/)
  const mixed = await p2prun(['--discovery', 'nodes', '--libs', libs, '--launcher', 'openmpi', '-n', '2', '-H', 'localhost,n2', '/bin/true'])
  t.equal(mixed.exitCode, 2)
  t.match(mixed.stderr, /^p2prun: error: --discovery nodes: the launcher's hosts name localhost among others, where the other nodes cannot reach it \(hint: name that host by its host name or address in -H or the hostfile\)$/)
  const perRank = await p2prun(['--discovery', 'nodes', '--libs', libs, '--launcher', 'local', '-n', '2', '/bin/true'], { env: { P2PRUN_NODE_PER_RANK: '1' } })
  t.equal(perRank.exitCode, 2)
  t.match(perRank.stderr, /^p2prun: error: --discovery nodes lists the launch's hosts, and P2PRUN_NODE_PER_RANK=1 makes each rank a node of its own \(hint: unset P2PRUN_NODE_PER_RANK, or use --discovery tracker\)$/)
})

t.test('40 nodes from a node list: no tracker asked, only the nodes the list picks dial the head, and every node gets the set', async (t) => {
  const { dir, libs, file } = await describedTree(t, { files: { 'liba.so': 400_000, 'libb.so': 250_000, 'sub/libc.so': 90_000 } })
  const head = await serve(file, libs, [])
  t.teardown(head.stop)
  const tracker = await countingTracker(t)
  const desc = parseDescription(await readFile(file))
  const ports = await freePorts(40)
  const nodes = ports.map((p) => `127.0.0.1:${p}`)
  // No fallback to the head within the test: a node the list does not pick must get every piece from peers.
  const swarm = await Promise.all(nodes.map((_, index) => SwarmNode.join(desc, {
    storeDir: dir, port: 0, maxConns: 100, numwant: 50, stallTimeoutMs: 600_000, trackers: [tracker.url], seeders: [head.seeder],
    nodeList: { nodes, index }, headFallbackMs: 600_000
  })))
  t.teardown(() => Promise.all(swarm.map((n) => n.close())))
  await Promise.all(swarm.map((n) => n.fetchAll()))
  const expected = await snapshotTree(libs)
  for (const index of [0, 1, 39]) {
    const out = path.join(dir, `node${index}`)
    await extractTree(desc, swarm[index] as SwarmNode, out)
    t.same(await snapshotTree(out), expected, `node ${index} has every file byte for byte`)
  }
  const fromHead = swarm.map((n) => n.stats().fromHead)
  t.same(fromHead.flatMap((bytes, i) => bytes > 0 && !dialsHead(40, i) ? [i] : []), [], 'no node the list did not pick got a byte from the head')
  t.ok(fromHead.filter((_, i) => !dialsHead(40, i)).length === 20, '20 nodes never dialed it')
  t.equal(tracker.connections(), 0, 'the tracker was never asked (the description\'s, nor --tracker\'s)')
  await Promise.all(swarm.map((n) => n.close()))
  t.ok(await head.stop() >= desc.totalBytes, 'the head sent the set')
  t.same((await readdir(dir)).filter((n) => n.startsWith('p2prun-')), [], 'no store left behind')
})

t.test('a node whose listed peers never come up gets the set from the head once a read waits', async (t) => {
  const { dir, libs, file } = await describedTree(t, { files: { 'liba.so': 300_000 } })
  const head = await serve(file, libs, [])
  t.teardown(head.stop)
  const desc = parseDescription(await readFile(file))
  const nodes = (await freePorts(40)).map((p) => `127.0.0.1:${p}`)
  t.notOk(dialsHead(40, 1), 'node 1 of 40 does not dial the head at start')
  const node = await SwarmNode.join(desc, {
    storeDir: dir, port: 0, maxConns: 100, numwant: 50, stallTimeoutMs: 600_000, seeders: [head.seeder], nodeList: { nodes, index: 1 }, headFallbackMs: 0
  })
  t.teardown(() => node.close())
  await node.fetchAll()
  t.equal(node.stats().fromHead, desc.totalBytes, 'every byte came from the head')
})

t.test('p2prun mount --node-list: an agent listens at its entry and serves its mount; bad lists are refused in one line, nothing left', async (t) => {
  const s = await scratch(t)
  const { libs, file } = await describedTree(t, { files: { 'liba.so': 200_000 } })
  const head = await serve(file, libs, [])
  s.defer(head.stop)
  const [own, other] = await freePorts(2)
  const list = path.join(s.dir, 'nodes')
  await writeFile(list, `# the job's agents\n127.0.0.1:${own}\n\n127.0.0.1:${other}\n`)
  const mnt = path.join(s.dir, 'mnt')
  const common = ['--seeder', head.seeder, '--store-dir', s.dir, '--mode', 'block']
  const agent = await mountAgent(s, file, mnt, path.join(s.dir, 'stats.json'), [...common, '--node-list', list, '--node-index', '0'])
  // It listens where the list says: a peer can reach it there.
  await new Promise<void>((resolve, reject) => net.connect(own as number, '127.0.0.1').once('connect', function (this: net.Socket) { this.destroy(); resolve() }).once('error', reject))
  t.same(await readFile(path.join(mnt, 'liba.so')), await readFile(path.join(libs, 'liba.so')), 'a read through the mount')
  const { exitCode } = await agent.stop()
  t.equal(exitCode, 0)

  const bad = async (args: string[], message: RegExp) => {
    const r = await p2prun(['mount', file, mnt, ...common, ...args])
    t.equal(r.exitCode, 2, args.join(' '))
    t.match(r.stderr, message)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  }
  await bad(['--node-list', list], /^p2prun mount: error: --node-list needs --node-index, this node's line in it, from 0 \(hint: pass --node-index K\)/)
  await bad(['--node-list', list, '--node-index', '2'], /node index 2 is not in .*nodes \(2 nodes\) \(hint: pass --node-index from 0 to 1/)
  await bad(['--node-list', list, '--node-index', 'x'], /--node-index "x" is not a line of --node-list \(hint: pass a number from 0\)/)
  await bad(['--node-list', path.join(s.dir, 'none'), '--node-index', '0'], /cannot read the node list .*none: ENOENT \(hint: pass --node-list a file of host:port lines/)
  await bad(['--node-list', list, '--node-index', '0', '--tracker', head.tracker], /--node-list replaces the tracker and the DHT \(hint: /)
  await bad(['--node-index', '0'], /--node-index is a place in --node-list/)
  t.same((await readdir(s.dir)).filter((n) => n.startsWith('p2prun-') || n === 'mnt'), [], 'no store, no mount point left')
})
