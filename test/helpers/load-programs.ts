// Small C programs that load shared libraries the three ways the dynamic linker searches that
// matter to p2prun's audit module: an absolute DT_RPATH, a DT_RUNPATH with $ORIGIN, and dlopen()
// of an absolute path. Each prints what the kernel actually mapped (/proc/self/maps), so a test
// sees where a library came from, whatever name ld.so keeps for it.
import { execFile } from 'node:child_process'
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export interface LoadPrograms {
  /** Links librp.so.1 through an absolute DT_RPATH (rpathLibDir). */
  readonly rpathApp: string
  readonly rpathLibDir: string
  /** Links librun.so.1 through DT_RUNPATH $ORIGIN/../lib (runpathLibDir). */
  readonly runpathApp: string
  readonly runpathLibDir: string
  /** `dlopenApp LIB` dlopen()s LIB and calls its plug_name(); exit code 3 if dlopen fails. */
  readonly dlopenApp: string
  readonly plugin: string
}

// Each app prints `name NAME` (what the library's function returned), `exe PATH`, then `mapped PATH`
// for each distinct mapped file with ".so" in its name, then `ok`.
const REPORT = `
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void report(void) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0) { perror("readlink /proc/self/exe"); exit(2); }
  exe[n] = '\\0';
  printf("exe %s\\n", exe);
  FILE *maps = fopen("/proc/self/maps", "r");
  if (!maps) { perror("/proc/self/maps"); exit(2); }
  char line[8192], *seen[4096];
  size_t nseen = 0;
  while (fgets(line, sizeof line, maps)) {
    char *file = strchr(line, '/'); /* no '/' before the path: address, perms, offset, dev, inode */
    if (!file) continue;
    file[strcspn(file, "\\n")] = '\\0';
    if (!strstr(file, ".so")) continue;
    size_t i = 0;
    while (i < nseen && strcmp(seen[i], file) != 0) i++;
    if (i < nseen || nseen == sizeof seen / sizeof *seen) continue;
    seen[nseen++] = strdup(file);
    printf("mapped %s\\n", file);
  }
  fclose(maps);
  printf("ok\\n");
}
`

const SOURCES: Record<string, string> = {
  'rp.c': 'const char *rp_name(void) { return "librp"; }\n',
  'run.c': 'const char *run_name(void) { return "librun"; }\n',
  'plug.c': 'const char *plug_name(void) { return "libplug"; }\n',
  'rpath-app.c': `${REPORT}
const char *rp_name(void);
int main(void) { printf("name %s\\n", rp_name()); report(); return 0; }
`,
  'runpath-app.c': `${REPORT}
const char *run_name(void);
int main(void) { printf("name %s\\n", run_name()); report(); return 0; }
`,
  'dlopen-app.c': `${REPORT}
#include <dlfcn.h>
int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: %s LIBRARY\\n", argv[0]); return 2; }
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) { fprintf(stderr, "dlopen failed: %s\\n", dlerror()); return 3; }
  const char *(*plug_name)(void) = (const char *(*)(void))dlsym(lib, "plug_name");
  if (!plug_name) { fprintf(stderr, "dlsym failed: %s\\n", dlerror()); return 4; }
  printf("name %s\\n", plug_name());
  report();
  return 0;
}
`
}

async function cc (args: readonly string[]): Promise<void> {
  try {
    await run('cc', ['-O2', '-Wall', ...args])
  } catch (err) {
    const e = err as Error & { stderr?: string }
    throw new Error(`cc ${args.join(' ')} failed: ${e.stderr || e.message}`)
  }
}

/** LIBDIR/NAME.so.1 with that soname, and the NAME.so -> NAME.so.1 link for -l. */
async function sharedLibrary (src: string, libDir: string, name: string): Promise<string> {
  await mkdir(libDir, { recursive: true })
  const file = path.join(libDir, `${name}.so.1`)
  await cc(['-shared', '-fPIC', `-Wl,-soname,${name}.so.1`, '-o', file, src])
  await rm(path.join(libDir, `${name}.so`), { force: true })
  await symlink(`${name}.so.1`, path.join(libDir, `${name}.so`))
  return file
}

export async function buildLoadPrograms (dir: string): Promise<LoadPrograms> {
  const root = path.resolve(dir)
  const src = path.join(root, 'src')
  await mkdir(src, { recursive: true })
  for (const [name, text] of Object.entries(SOURCES)) await writeFile(path.join(src, name), text)

  const rpathLibDir = path.join(root, 'rpath/lib')
  const rpathApp = path.join(root, 'rpath/app')
  await sharedLibrary(path.join(src, 'rp.c'), rpathLibDir, 'librp')
  await cc(['-o', rpathApp, path.join(src, 'rpath-app.c'), `-L${rpathLibDir}`, '-lrp',
    `-Wl,--disable-new-dtags,-rpath,${rpathLibDir}`])

  const runpathLibDir = path.join(root, 'runpath/lib')
  const runpathApp = path.join(root, 'runpath/bin/app')
  await sharedLibrary(path.join(src, 'run.c'), runpathLibDir, 'librun')
  await mkdir(path.dirname(runpathApp), { recursive: true })
  // execFile passes '$ORIGIN' to the linker as is: no shell to expand it.
  await cc(['-o', runpathApp, path.join(src, 'runpath-app.c'), `-L${runpathLibDir}`, '-lrun',
    '-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib'])

  const plugin = path.join(root, 'dlopen/plugins/libplug.so')
  const dlopenApp = path.join(root, 'dlopen/app')
  await mkdir(path.dirname(plugin), { recursive: true })
  await cc(['-shared', '-fPIC', '-o', plugin, path.join(src, 'plug.c')])
  await cc(['-o', dlopenApp, path.join(src, 'dlopen-app.c'), '-ldl'])

  return { rpathApp, rpathLibDir, runpathApp, runpathLibDir, dlopenApp, plugin }
}
