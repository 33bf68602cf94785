// The YAML parser, in a module of its own so that config.ts imports it only when there is a
// p2prun.yaml to read (the yaml package costs every node agent and rank step ~30 ms to load).
export { parse as parseYaml } from 'yaml'
