// Run from its bundle, p2prun is compiled by dist/cli.mjs (bundle-loader.ts) as a script with V8's
// code cache, and scripts/build.ts wraps it in a function of this object: where the bundle is, and
// how to save the cache once a command has run. Run from the sources, there is no such object.
declare const p2prunBundle: { readonly url: string, saveCodeCache (): void } | undefined

/** Whether the bundle's loader runs this (it set V8 up before compiling it), or the sources do. */
export const fromBundle = typeof p2prunBundle !== 'undefined'

/** Keeps the code of every function this run compiled for the next run of its kind (bundle-loader.ts); from the sources, nothing. */
export function saveCodeCache (): void {
  if (typeof p2prunBundle !== 'undefined') p2prunBundle.saveCodeCache()
}
