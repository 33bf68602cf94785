// Bundles the CLI into dist/ for bin/p2prun (run by `npm ci` through `prepare`, and by `npm test`
// and `npm run bench` first). Every node agent and every rank's step is a fresh Node process, and
// on the sources much of their start-up goes to resolving and loading modules one by one (with
// webtorrent, ~350 of them: an agent used 0.60 CPU-seconds until its mount was up, 0.35 s from
// the bundle). N agents that start together on shared cores pay that N times before the first
// byte moves. Commands stay separate chunks, so `rank-prepare` loads no swarm or FUSE code.
import { build } from 'esbuild'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const outdir = path.join(root, 'dist')

await rm(outdir, { recursive: true, force: true })
await build({
  entryPoints: [path.join(root, 'launcher/cli.ts')],
  outdir,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  // Native addons find their binaries relative to their own package: load them from node_modules.
  external: ['fuse-native', 'utp-native', 'bufferutil', 'utf-8-validate'],
  // CommonJS dependencies call require(), which an ES module does not have.
  banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
  logLevel: 'warning'
})
