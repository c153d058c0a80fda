/**
 * The daemon's V8 code cache (lib/daemon/code-cache.ts), on a small
 * CommonJS file in a folder of the test's own: written once when absent,
 * used when its key matches, never trusted from a folder or file that is
 * not this user's alone, and never used for a different bundle of the same
 * length (V8 checks only the length). The code that runs is always the
 * bundle's own, whatever became of the cache.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { cacheHeader, runWithCodeCache, type CodeCacheOptions } from '../../lib/daemon/code-cache.js';
import { tempDir } from '../helpers/temp-dir.js';

declare global {
  var __codeCacheRuns: string[] | undefined;
}

/** A bundle that records `mark` when it runs, through require and module as node's loader gives them. */
const bundleText = (mark: string): string =>
  `#!/usr/bin/env node\n'use strict';\nconst path = require('node:path');\nmodule.exports.mark = ${JSON.stringify(mark)};\n` +
  `(globalThis.__codeCacheRuns ??= []).push(module.exports.mark + ':' + path.basename(__filename));\n` +
  `function work(n) { let s = 0; for (let i = 0; i < n; i++) s += i; return s; }\nwork(10);\n`;

async function setup(t: Parameters<typeof tempDir>[0], mark = 'A'): Promise<{ bundle: string; cacheDir: string; cacheFile: string }> {
  const dir = await tempDir(t);
  const cacheDir = path.join(dir, 'cache');
  await fs.mkdir(cacheDir, { mode: 0o700 });
  const bundle = path.join(dir, 'main.cjs');
  await fs.writeFile(bundle, bundleText(mark));
  return { bundle, cacheDir, cacheFile: path.join(cacheDir, 'vfio-hookd.v8cache') };
}

/** Poll `done` every 10 ms, at most 2 s (the cache is written on a timer): the assertion after it decides. */
async function until(done: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200 && !(await done()); i++) await new Promise((r) => setTimeout(r, 10));
}

/** Run, then wait for the cache file (written on a timer of 0 ms) when one is expected. */
async function run(bundle: string, options: CodeCacheOptions, expectWrite: boolean): Promise<string> {
  const outcome = runWithCodeCache(bundle, options);
  if (expectWrite && options.cacheDir !== undefined) {
    const file = path.join(options.cacheDir, 'vfio-hookd.v8cache');
    await until(async () => (await fs.stat(file).catch(() => null)) !== null);
  }
  return outcome;
}

const lastRun = (): string | undefined => globalThis.__codeCacheRuns?.at(-1);

test.serial('absent, then written with its header, then used; the bundle runs each time', async (t) => {
  const { bundle, cacheDir, cacheFile } = await setup(t);
  const notes: string[] = [];
  const options = { cacheDir, writeAfterMs: 0, note: (l: string) => notes.push(l) };
  t.is(await run(bundle, options, true), 'absent');
  t.is(lastRun(), 'A:main.cjs');
  const data = await fs.readFile(cacheFile);
  t.regex(data.subarray(0, data.indexOf(0x0a)).toString('latin1'), /^vfio-hookd code cache v1 [0-9a-f]{64}$/);
  t.is((await fs.stat(cacheFile)).mode & 0o777, 0o600);
  t.is(await run(bundle, options, false), 'used');
  t.is(lastRun(), 'A:main.cjs');
  t.deepEqual(notes, []);
  t.deepEqual((await fs.readdir(cacheDir)).sort(), ['vfio-hookd.v8cache'], 'no temporary file is left');
});

test.serial('a different bundle of the same length is stale: its own code runs and the cache is rewritten', async (t) => {
  const { bundle, cacheDir, cacheFile } = await setup(t);
  const options = { cacheDir, writeAfterMs: 0, note: () => undefined };
  await run(bundle, options, true);
  const before = await fs.readFile(cacheFile);
  await fs.writeFile(bundle, bundleText('B')); // same length as 'A'
  await fs.rm(cacheFile);
  await fs.writeFile(cacheFile, before, { mode: 0o600 });
  t.is(await run(bundle, options, false), 'stale');
  t.is(lastRun(), 'B:main.cjs');
  await until(async () => !(await fs.readFile(cacheFile)).equals(before));
  t.false((await fs.readFile(cacheFile)).equals(before), 'rewritten for the new bundle');
  t.is(await run(bundle, options, false), 'used');
});

test.serial('a cache V8 rejects (right header, broken body) still runs the bundle and is rewritten', async (t) => {
  // A source of its own, never compiled in this process before: V8 answers one it has compiled from memory.
  const { bundle, cacheDir, cacheFile } = await setup(t, 'C');
  const broken = Buffer.concat([Buffer.from(`${cacheHeader(bundleText('C'))}\n`, 'latin1'), Buffer.alloc(4096, 0x5a)]);
  await fs.writeFile(cacheFile, broken, { mode: 0o600 });
  t.is(await run(bundle, { cacheDir, writeAfterMs: 0, note: () => undefined }, false), 'rejected');
  t.is(lastRun(), 'C:main.cjs');
  await until(async () => !(await fs.readFile(cacheFile)).equals(broken));
  t.false((await fs.readFile(cacheFile)).equals(broken), 'rewritten');
});

test.serial('a folder or file others may write, or a symlink, is not trusted, not read and not rewritten', async (t) => {
  const { bundle, cacheDir, cacheFile } = await setup(t);
  const notes: string[] = [];
  const options = { cacheDir, writeAfterMs: 0, note: (l: string) => notes.push(l) };
  await run(bundle, options, true);
  const good = await fs.readFile(cacheFile);

  await fs.chmod(cacheDir, 0o777);
  t.is(await run(bundle, options, false), 'untrusted');
  t.is(lastRun(), 'A:main.cjs');
  await fs.chmod(cacheDir, 0o700);

  await fs.chmod(cacheFile, 0o666);
  t.is(await run(bundle, options, false), 'untrusted');
  await fs.chmod(cacheFile, 0o600);

  const elsewhere = path.join(path.dirname(cacheDir), 'elsewhere');
  await fs.writeFile(elsewhere, good, { mode: 0o600 });
  await fs.rm(cacheFile);
  await fs.symlink(elsewhere, cacheFile);
  t.is(await run(bundle, options, false), 'untrusted');
  await new Promise((r) => setTimeout(r, 50));
  t.true((await fs.lstat(cacheFile)).isSymbolicLink(), 'an untrusted cache is left as it is');
  t.is(notes.length, 3);
  t.regex(notes[0]!, /ignoring the code cache .*vfio-hookd\.v8cache: it or its folder is not this user's alone/);
});

test.serial('no folder (no CACHE_DIRECTORY): no cache, nothing written; a folder that cannot be written says so', async (t) => {
  const { bundle, cacheDir } = await setup(t);
  t.is(await run(bundle, { cacheDir: undefined, writeAfterMs: 0 }, false), 'none');
  t.is(lastRun(), 'A:main.cjs');
  const notes: string[] = [];
  const missing = path.join(cacheDir, 'not-there');
  t.is(await run(bundle, { cacheDir: missing, writeAfterMs: 0, note: (l) => notes.push(l) }, false), 'absent');
  await until(() => notes.length > 0);
  t.regex(notes[0] ?? '', /the code cache was not written to .*not-there\/vfio-hookd\.v8cache \(ENOENT.*; the next start compiles again/);
  t.deepEqual(await fs.readdir(cacheDir), []);
});
