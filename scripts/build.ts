// Bundles the CLI into one file, dist/cli-bundle.js, which dist/cli.mjs (launcher/bundle-loader.ts)
// compiles with V8's code cache for bin/p2prun (run by `npm ci` through `prepare`,
// and by `npm test` and `npm run bench` first). Every node agent is a fresh Node process, and on the
// sources much of its start-up goes to resolving and loading modules one by one (measured when
// agents still ran on webtorrent's ~350 modules: 0.60 CPU-seconds until the mount was up, 0.35 s
// from the bundle). N agents that start together on shared cores pay that N times before the first
// byte moves. One file, not a chunk per command: with Node's compile cache (bin/p2prun) a command
// compiles only the functions it runs either way, and Node resolving and instantiating the ~45
// chunks an agent loaded cost more than reading the rest (an agent's start 126 ms of CPU against
// 173 ms, 20 interleaved starts; `p2prun --version` 60-71 ms against 102-111).
// It also compiles p2prun's addon (native/: the FUSE server, the socket low-water mark, the store's
// mapping) into dist/, against this Node's own headers, and the LD_AUDIT module (native/audit.c).
import { build, type Plugin } from 'esbuild'
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { isBuiltin } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { AUDIT_FILE, NATIVE_AGENT_FILE, NATIVE_FILE, RANK_STEP_FILE } from '../lib/dist-files.ts'

/**
 * Node's built-in modules as their plain exports objects (process.getBuiltinModule), not as ES
 * modules: Node makes an ES module of a built-in by reading every export, getters included, and
 * those load more built-ins. `import { createHash } from 'node:crypto'` loads WebCrypto's ~20
 * modules, `node:util` its argument parser and diff, `node:module` source maps, `node:process` the
 * diagnostic report. An agent's start paid ~15 ms of CPU for them (measured: the agent's 16
 * built-ins in 30-37 ms as ES modules, 18 ms as objects, with Maglev off as launcher/cli.ts sets it).
 * A named import is one of the object's data properties, read once: a getter (fs.promises,
 * crypto.webcrypto) is not one, and importing it by name fails the build; take it from the default.
 */
function builtinsAsObjects (seen = new Set<string>()): Plugin {
  return {
    name: 'builtins-as-objects',
    setup (b) {
      b.onResolve({ filter: /^[a-z0-9_:/]+$/ }, (args) => {
        if (!isBuiltin(args.path)) return undefined
        const id = args.path.startsWith('node:') ? args.path : `node:${args.path}`
        seen.add(id)
        return { path: id, namespace: 'builtin' }
      })
      b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => {
        const exports = process.getBuiltinModule(args.path) as Record<string, unknown>
        const names = Object.entries(Object.getOwnPropertyDescriptors(exports))
          .filter(([name, d]) => 'value' in d && name !== 'default' && /^[A-Za-z_$][\w$]*$/.test(name))
          .map(([name]) => name)
        return {
          contents: `const m = process.getBuiltinModule(${JSON.stringify(args.path)});\nexport default m;\nexport const { ${names.join(', ')} } = m;\n`,
          loader: 'js'
        }
      })
    }
  }
}

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const outdir = path.join(root, 'dist')

await rm(outdir, { recursive: true, force: true })
// The bundle is an ES module's code run as the body of an async function (top-level await works),
// of the object the loader passes in (launcher/bundle.ts): a script, which V8 can cache whole after
// a run, where Node's module loader caches what is compiled at load only.
const builtins = new Set<string>()
const bundled = await build({
  entryPoints: [path.join(root, 'launcher/cli.ts')],
  write: false,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  // Native addons find their binaries relative to their own package: load them from node_modules.
  external: ['utp-native', 'bufferutil', 'utf-8-validate'],
  define: { 'import.meta.url': 'p2prunBundle.url' },
  // CommonJS dependencies call require(), which the bundle's code does not have.
  banner: { js: "const require = process.getBuiltinModule('node:module').createRequire(p2prunBundle.url);" },
  plugins: [builtinsAsObjects(builtins)],
  logLevel: 'warning'
})
// One character past ASCII (esbuild keeps some comments as written) makes the whole bundle a
// two-byte string, which cost every agent's start ~13 ms of CPU (270 against 283 ms, medians of 12
// starts each, bench/README.md 2026-12-03). Escaped, it stays one-byte text: \uXXXX means the same
// in a string, a template, a regular expression or an identifier, and is plain text in a comment.
const code = (bundled.outputFiles[0]?.text ?? '').replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
const statement = /^(import|export)\b.*$/m.exec(code)
if (statement) throw new Error(`cannot wrap the bundle in a function: it has a module statement (${statement[0].slice(0, 80)})`)
const wrapped = `(async function (p2prunBundle) {\n${code}\n})\n`
await mkdir(outdir, { recursive: true })
await writeFile(path.join(outdir, 'cli-bundle.js'), wrapped)
await build({
  entryPoints: [path.join(root, 'launcher/bundle-loader.ts')],
  outfile: path.join(outdir, 'cli.mjs'),
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  define: {
    BUNDLE_HASH: JSON.stringify(createHash('sha256').update(wrapped).digest('hex').slice(0, 16)),
    BUNDLE_BUILTINS: JSON.stringify([...builtins].sort())
  },
  plugins: [builtinsAsObjects()],
  logLevel: 'warning'
})

// Node-API headers come with the Node p2prun runs on: the npm package `node` installs its binary
// and headers as the package node-<platform>-<arch>, nested under `node` by `npm ci` (an `npm
// install` of something else may hoist it, or prune it: then `npm ci` brings it back). The FUSE
// server links libfuse3.
const platformPackage = `node-${process.platform}-${process.arch}`
const headers = [path.join(root, 'node_modules/node/node_modules', platformPackage), path.join(root, 'node_modules', platformPackage)]
  .map((dir) => path.join(dir, 'include/node'))
  .find((dir) => existsSync(path.join(dir, 'node_api.h')))
if (!headers) throw new Error(`cannot build ${NATIVE_FILE}: Node's headers (${platformPackage}) are missing (hint: run \`npm ci\`)`)
const sources = ['addon.c', 'socket-low-water.c', 'fuse-server.c', 'fuse-session.c', 'fuse-table.c', 'process-exit.c', 'store-map.c', 'peer-stream.c', 'listen-socket.c', 'exit-watch.c'].map((name) => path.join(root, 'native', name))
let fuse3: string[]
try {
  fuse3 = execFileSync('pkg-config', ['--cflags', '--libs', 'fuse3'], { encoding: 'utf8' }).trim().split(/\s+/)
} catch (err) {
  throw new Error(`cannot build ${NATIVE_FILE}: ${(err as Error).message} (hint: install pkg-config and libfuse3-dev: scripts/setup-system.sh)`)
}
cc(NATIVE_FILE, ['-shared', '-fPIC', '-I', headers, ...sources, ...fuse3], 'install a C compiler, pkg-config and libfuse3-dev: scripts/setup-system.sh')

// The LD_AUDIT module ranks load when their set came from the program's load closure
// (lib/session/rank.ts): plain C against libc alone, so any glibc node can load it.
// On x86-64 and AArch64 without libc (native/audit.c says why); the compiler must not turn its copy
// loops back into calls of the memcpy it defines.
const freestanding = process.arch === 'x64' || process.arch === 'arm64'
  ? ['-nostdlib', '-ffreestanding', '-fno-stack-protector', '-fno-tree-loop-distribute-patterns']
  : []
cc(AUDIT_FILE, ['-shared', '-fPIC', ...freestanding, path.join(root, 'native/audit.c')])
// The rank step of a node's other ranks (bin/p2prun-rank): a program, against libc alone.
// It and the native agent share the node state's records and base64 (native/state-files.c, native/base64.c).
const shared = ['state-files.c', 'base64.c'].map((f) => path.join(root, 'native', f))
cc(RANK_STEP_FILE, [path.join(root, 'native/rank-step.c'), ...shared])
// The native node agent: the same FUSE server as the addon's, libcrypto for SHA-1 and the job proof,
// zlib for the description a job spec carries (deflated).
const agentSources = readdirSync(path.join(root, 'native/agent')).filter((f) => f.endsWith('.c')).map((f) => path.join(root, 'native/agent', f))
const version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version
cc(NATIVE_AGENT_FILE, [`-DP2PRUN_VERSION="${version}"`, ...agentSources, ...shared, ...['fuse-session.c', 'fuse-table.c'].map((f) => path.join(root, 'native', f)), ...fuse3, '-lcrypto', '-lz', '-lpthread'],
  'install a C compiler, pkg-config, libfuse3-dev, libssl-dev and zlib1g-dev: scripts/setup-system.sh')

/** cc with warnings as errors, into dist/; a failure names what could not be built and what to install. */
function cc (output: string, args: readonly string[], hint = 'install a C compiler: scripts/setup-system.sh'): void {
  try {
    execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', ...args, '-o', path.join(outdir, output)], { stdio: 'inherit' })
  } catch (err) {
    throw new Error(`cannot build ${output}: ${(err as Error).message} (hint: ${hint})`)
  }
}
