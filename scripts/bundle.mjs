#!/usr/bin/env node
/**
 * Bundles each executable into one file under dist/bin/ (esbuild), so node
 * loads one file instead of ~150 modules of lib/ and node_modules/ at every
 * start (the daemon's start to READY=1, every `vfio-hookctl` command, the
 * agent at login). The tests run the sources through tsx; what is installed
 * and what the kernel, system and benchmark runs use is this bundle.
 *
 * Layout (the relative paths the sources use still hold in one folder):
 *   dist/bin/vfio-hookd.js, vfio-hookctl.js, vfio-hookd-agent.js
 *   dist/bin/vfio-hookd-main.cjs               (the daemon, CommonJS: vfio-hookd.js, built from
 *                                               service/vfio-hookd-launcher.ts, runs it through a V8
 *                                               code cache, lib/daemon/code-cache.ts)
 *   dist/bin/sysfs-writer-child.cjs            (lib/pci/_internal/sysfs-writer.ts: `./sysfs-writer-child.cjs`)
 *   dist/bin/_internal/parse-worker.js         (lib/domain/parse-off-thread.ts: `./_internal/parse-worker.js`)
 * Native addons (unix-dgram, usocket) and dbus-next's optional X11 address
 * lookup stay outside, loaded from node_modules beside dist/.
 *
 * Run by `npm run build` after tsc; `node scripts/bundle.mjs --metafile FILE`
 * also writes esbuild's size report.
 */
import { build } from 'esbuild';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(repo, 'dist', 'bin');
const metafileArg = process.argv.indexOf('--metafile');

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  external: ['unix-dgram', 'usocket', 'x11'],
  // CommonJS dependencies (dbus-next) call require(); an ESM bundle has none of its own.
  banner: {
    js: "import { createRequire as __vfioCreateRequire } from 'node:module'; const require = __vfioCreateRequire(import.meta.url);",
  },
  // Names stay readable in stacks (the journal's CODE_FUNC, bug reports); whitespace does not matter to node's parser.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  logLevel: 'warning',
  absWorkingDir: repo,
};

await fs.rm(out, { recursive: true, force: true });
const result = await build({
  ...common,
  entryPoints: {
    'vfio-hookd': 'service/vfio-hookd-launcher.ts',
    'vfio-hookctl': 'service/vfio-hookctl.ts',
    'vfio-hookd-agent': 'service/vfio-hookd-agent.ts',
    '_internal/parse-worker': 'lib/domain/_internal/parse-worker.ts',
  },
  outdir: out,
  metafile: metafileArg > 0,
});
// The daemon as CommonJS, for vm.Script's code cache (Node 20 caches no ES module). import.meta.url becomes
// the file's URL, which the relative paths above are resolved against; import.meta.resolve is used only under tsx.
await build({
  ...common,
  format: 'cjs',
  banner: { js: "var __vfioImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': '__vfioImportMetaUrl', 'import.meta.resolve': 'undefined' },
  entryPoints: { 'vfio-hookd-main': 'service/vfio-hookd.ts' },
  outdir: out,
  outExtension: { '.js': '.cjs' },
});
await fs.copyFile(path.join(repo, 'lib/pci/_internal/sysfs-writer-child.cjs'), path.join(out, 'sysfs-writer-child.cjs'));
for (const name of ['vfio-hookd', 'vfio-hookctl', 'vfio-hookd-agent']) await fs.chmod(path.join(out, `${name}.js`), 0o755);
if (metafileArg > 0) await fs.writeFile(process.argv[metafileArg + 1], JSON.stringify(result.metafile));
