// The job spec crosses from the launching p2prun to every node's: read back field by field, a
// spec of another version or with a field out of shape is refused with one line, and a rank that
// gets one starts nothing.
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import t from 'tap'
import { loadConfig } from '../lib/config.ts'
import { randomBytes } from 'node:crypto'
import { decodeJob, descriptionOf, encodeJob, JOB_SPEC_VERSION, launchEnvironment, nodeSettings, SPEC_DESCRIPTION_MAX, specDescription, type JobSpec } from '../lib/session/job-spec.ts'
import { applyTaskEnv, expandTaskEnv, taskEnv, taskEnvTemplate } from '../lib/session/rank-env.ts'
import { p2prun } from './helpers/cli.ts'

async function spec (): Promise<JobSpec> {
  return {
    version: JOB_SPEC_VERSION,
    launchId: '0123abcd',
    infoHash: 'a'.repeat(40),
    descriptionUrl: 'http://10.0.0.1:8000/p2prun/x.torrent',
    trackers: ['http://10.0.0.1:8000/announce'],
    seeders: ['10.0.0.1:6881'],
    mountPoint: '/tmp/p2prun/%j-%n',
    libDirs: [''],
    node: nodeSettings(await loadConfig({ flags: { mode: 'block', 'max-conns': '7', owner: '5:6' }, env: {}, cwd: '/' })),
    secret: 'ff'.repeat(32),
    sources: [{ name: '', dir: '/home/u/libs' }],
    taskEnv: taskEnvTemplate({ libDirs: [''] })
  }
}

const raw = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')

t.test('a spec survives the trip whole, node settings included', async (t) => {
  const job = await spec()
  t.same(decodeJob(encodeJob(job)), job)
  t.match(job.node, { mode: 'block', maxConns: 7, owner: { uid: 5, gid: 6 } })
})

t.test('another version, or a field out of shape, is refused by name', async (t) => {
  const job = await spec()
  const other = JOB_SPEC_VERSION + 1
  t.throws(() => decodeJob(raw({ ...job, version: other })), { code: 'LAUNCH', message: `P2PRUN_JOB is of version "${other}"; this p2prun reads version ${JOB_SPEC_VERSION}` })
  t.throws(() => decodeJob(raw({ ...job, version: undefined })), { message: /of version "undefined"/ }, 'a spec from before versions')
  const cases: [string, unknown][] = [
    ['infoHash', 'zz'], ['launchId', '../x'], ['trackers', 'http://a'], ['node', { ...job.node, mode: 'fast' }],
    ['node', { ...job.node, runDir: 'relative' }], ['node', { ...job.node, maxConns: 0 }], ['secret', 'xyz'],
    ['sources', [{ name: '', dir: 'rel' }]], ['redirect', { whole: ['/a'] }], ['dht', ['10.0.0.1:6881', 7]],
    ['taskEnv', [{ name: 'A=B', op: 'set', value: 'x' }]], ['taskEnv', [{ name: 'A', op: 'replace', value: 'x' }]]
  ]
  for (const [field, value] of cases) {
    t.throws(() => decodeJob(raw({ ...job, [field]: value })), { code: 'USAGE', message: `P2PRUN_JOB is corrupt (${field} is not valid)` }, `${field}: ${JSON.stringify(value)}`)
  }
  t.throws(() => decodeJob(raw({ ...job, node: undefined })), { message: 'P2PRUN_JOB is corrupt (node is missing)' })
})

t.test('the description rides in the spec when it fits, and comes out as it went in', async (t) => {
  const job = await spec()
  const bytes = Buffer.from('d4:infod6:lengthi3e4:name1:aee'.repeat(500))
  const description = specDescription(bytes)
  t.ok(description !== undefined && description.length < bytes.length / 10, 'deflated')
  const carried = decodeJob(encodeJob({ ...job, description }))
  t.same(descriptionOf(carried), bytes)
  t.equal(descriptionOf(job), undefined, 'none: the node asks peers')
  t.equal(specDescription(randomBytes(SPEC_DESCRIPTION_MAX)), undefined, 'too large for one environment string: left to peers')
  t.throws(() => descriptionOf({ ...job, description: 'AAAA' }), { code: 'USAGE', message: /^P2PRUN_JOB is corrupt \(its description does not inflate/ })
  t.throws(() => decodeJob(raw({ ...job, description: 'not base64!' })), { message: 'P2PRUN_JOB is corrupt (description is not valid)' })
})

t.test('a rank\'s environment: the mount before the task\'s own paths, the audit module after its own', async (t) => {
  const job = { ...await spec(), libDirs: ['', 'lib'], pythonPath: ['py'], redirect: { whole: ['/a'], some: ['/b', '/c'] } }
  const entries = taskEnv(job, '/m', '/inst/p2prun-audit.so')
  t.same(applyTaskEnv(entries, {}), {
    LD_LIBRARY_PATH: '/m:/m/lib', P2PRUN_MOUNT: '/m', LD_AUDIT: '/inst/p2prun-audit.so', P2PRUN_AUDIT_MOUNT: '/m',
    P2PRUN_AUDIT_WHOLE: '/a', P2PRUN_AUDIT_SOME: '/b:/c', PYTHONPATH: '/m/py'
  })
  t.match(applyTaskEnv(entries, { LD_LIBRARY_PATH: '/u', LD_AUDIT: '/own.so', PYTHONPATH: '/p', P2PRUN_MOUNT: '/old' }),
    { LD_LIBRARY_PATH: '/m:/m/lib:/u', LD_AUDIT: '/own.so:/inst/p2prun-audit.so', PYTHONPATH: '/m/py:/p', P2PRUN_MOUNT: '/m' })
  t.same(taskEnv(job, '/m', undefined).map((e) => e.name), ['LD_LIBRARY_PATH', 'P2PRUN_MOUNT', 'PYTHONPATH'], 'no audit module: no LD_AUDIT')
})

t.test('the spec carries the ranks\' environment as templates of the mount point, made once for every node', async (t) => {
  const placement = { libDirs: ['', 'lib%d'], pythonPath: ['py'], redirect: { whole: ['/a%m'], some: ['/b'] } }
  const template = taskEnvTemplate(placement)
  t.match(template[0], { name: 'LD_LIBRARY_PATH', op: 'prepend', value: '%m:%m/lib%%d' }, 'a percent sign of the set escaped')
  const audit = template.find((e) => e.name === 'LD_AUDIT')?.value
  t.ok(audit === undefined || path.isAbsolute(audit), 'this installation\'s audit module, where it is built')
  for (const mountPoint of ['/m', '/mnt/100%/x']) {
    t.same(expandTaskEnv(template, mountPoint), taskEnv(placement, mountPoint, audit), `expanded for ${mountPoint}: what the node would have made`)
  }
})

t.test('only the spec and the node-local variables go to the ranks', async (t) => {
  const { launchEnv, forward } = launchEnvironment({ P2PRUN_STORE_DIR: '/x', P2PRUN_NODE_NAME: 'n1', PATH: '/bin' }, 'SPEC')
  t.same(forward, ['P2PRUN_JOB', 'P2PRUN_NODE_NAME'])
  t.equal(launchEnv.P2PRUN_JOB, 'SPEC')
})

t.test('a rank given a spec of another version says so in one line and starts nothing', async (t) => {
  const dir = t.testdir()
  const job = await spec()
  const old = raw({ ...job, version: JOB_SPEC_VERSION + 1, node: { ...job.node, runDir: path.join(dir, 'run') } })
  const r = await p2prun(['rank-prepare', '--pid', String(process.pid), '--', 'true'], { env: { P2PRUN_JOB: old } })
  t.same([r.exitCode, r.stderr], [1, `p2prun rank: error: P2PRUN_JOB is of version "${JOB_SPEC_VERSION + 1}"; this p2prun reads version ${JOB_SPEC_VERSION} ` +
    '(hint: install the same p2prun on the submitting host and on every node)'])
  t.same(await readdir(dir), [], 'no run directory, state or agent')
})
