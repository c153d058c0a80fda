#!/usr/bin/env node
/**
 * dist/bin/vfio-hookd.js, what the unit starts: runs the daemon's bundle
 * (dist/bin/vfio-hookd-main.cjs, built from service/vfio-hookd.ts) through
 * a V8 code cache in systemd's CacheDirectory= (lib/daemon/code-cache.ts
 * says when a cache is trusted and written). Without CACHE_DIRECTORY (a
 * manual run, the demo) it runs the same bundle with no cache.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runWithCodeCache } from '../lib/daemon/code-cache.js';

// Ten seconds: the start and recovery have run by then (READY=1 comes in well under one on a quiet machine).
const WRITE_AFTER_MS = 10_000;

const here = path.dirname(fileURLToPath(import.meta.url));
// Under systemd stderr is the journal stream: a <N> prefix gives a line its priority (the daemon's own lines use
// the native protocol once it has set up its journal). A manual run sees only the notes.
const journal = process.env['JOURNAL_STREAM'] !== undefined;
const outcome = runWithCodeCache(path.join(here, 'vfio-hookd-main.cjs'), {
  // systemd joins several CacheDirectory= folders with ':'; the unit names one.
  cacheDir: process.env['CACHE_DIRECTORY']?.split(':')[0] || undefined,
  writeAfterMs: WRITE_AFTER_MS,
  note: (line) => process.stderr.write(`${journal ? '<4>' : ''}${line}\n`),
});
if (journal) process.stderr.write(`<7>vfio-hookd: V8 code cache: ${outcome}\n`);
