/**
 * Run the daemon's CommonJS bundle through a V8 code cache.
 *
 * Node 20 compiles every start's JavaScript from source: the daemon's
 * bundle (three quarters of a megabyte) and then each function as it is
 * first called. A code cache made by V8 after one start lets the next start
 * skip most of that (`vm.Script`'s `cachedData`; Node 22's module compile
 * cache does the same, Node 20 has only this). Issue 13 measured it on the
 * start to READY=1 (test/bench/daemon.bench.ts).
 *
 * The cache holds compiled code that this process would run, so it is
 * trusted only as far as the folder that holds it:
 * - only when the unit gives a folder (systemd's CacheDirectory= sets
 *   CACHE_DIRECTORY): a manual run, the demo and the tests use no cache and
 *   write nothing;
 * - only a file owned by this user and writable by no one else, in a folder
 *   that is the same, else it is ignored (and never rewritten);
 * - keyed on the bundle's whole text, node's version and its V8 options (a
 *   header line with their SHA-256): V8 itself checks only the source's
 *   length and its own version and flags, and a reinstalled bundle of the
 *   same length must not run the old one's code;
 * - written once (absent, stale or rejected), a while after the start so
 *   that the functions the start ran are in it, to a temporary file renamed
 *   into place, so a reader never sees half a cache.
 * A cache that cannot be read, trusted or used costs only the compile it
 * would have saved; the daemon never fails for it.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

const HEADER = 'vfio-hookd code cache v1 ';

export interface CodeCacheOptions {
  /** The folder of the cache file, or undefined for no cache (CACHE_DIRECTORY). */
  readonly cacheDir: string | undefined;
  /** How long after the start to write a new cache. */
  readonly writeAfterMs: number;
  /** Where a note goes when the cache is ignored or cannot be written (stderr, the journal under systemd). */
  readonly note?: (line: string) => void;
}

export type CacheOutcome = 'none' | 'absent' | 'stale' | 'untrusted' | 'rejected' | 'used';

/**
 * Compile and run `bundle` (a CommonJS file) as node would, with the code
 * cache when there is a trusted one; schedule a new cache when there is
 * none usable. Returns what became of the cache.
 */
export function runWithCodeCache(bundle: string, options: CodeCacheOptions): CacheOutcome {
  const note = options.note ?? ((line: string) => process.stderr.write(`${line}\n`));
  const text = fs.readFileSync(bundle, 'utf8');
  const wrapped = wrap(text);
  const header = headerFor(wrapped);
  const cacheFile = options.cacheDir === undefined ? null : path.join(options.cacheDir, 'vfio-hookd.v8cache');

  let outcome: CacheOutcome = cacheFile === null ? 'none' : 'absent';
  let cachedData: Buffer | undefined;
  if (cacheFile !== null) {
    const read = readTrusted(cacheFile);
    if (read === 'untrusted') {
      outcome = 'untrusted';
      note(`vfio-hookd: ignoring the code cache ${cacheFile}: it or its folder is not this user's alone (owner or mode)`);
    } else if (read !== null) {
      const end = read.indexOf(0x0a);
      if (end > 0 && read.subarray(0, end).toString('latin1') === header) cachedData = read.subarray(end + 1);
      else outcome = 'stale';
    }
  }
  const script = new vm.Script(wrapped, { filename: bundle, ...(cachedData ? { cachedData } : {}) });
  if (cachedData) outcome = script.cachedDataRejected === true ? 'rejected' : 'used';

  const module = { exports: {} };
  const fn = script.runInThisContext() as (...args: unknown[]) => void;
  fn.call(module.exports, module.exports, createRequire(bundle), module, bundle, path.dirname(bundle));

  if (cacheFile !== null && outcome !== 'used' && outcome !== 'untrusted') {
    setTimeout(() => {
      try {
        const data = script.createCachedData();
        const tmp = `${cacheFile}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, Buffer.concat([Buffer.from(`${header}\n`, 'latin1'), data]), { mode: 0o600, flag: 'wx' });
        fs.renameSync(tmp, cacheFile);
      } catch (error) {
        note(`vfio-hookd: the code cache was not written to ${cacheFile} (${(error as Error).message}); the next start compiles again`);
      }
    }, options.writeAfterMs).unref();
  }
  return outcome;
}

/** The bundle's text as node's CommonJS loader wraps it; a shebang is valid only as a file's first characters. */
function wrap(bundleText: string): string {
  return `(function (exports, require, module, __filename, __dirname) {${bundleText.replace(/^#!.*/, '')}\n})`;
}

/** The cache file's first line for a bundle's text: what a cache must have been made from (exported for the tests). */
export function cacheHeader(bundleText: string): string {
  return headerFor(wrap(bundleText));
}

/** cacheHeader of text already wrapped: the start wraps the 750 KB bundle once, not twice. */
function headerFor(wrapped: string): string {
  const key = createHash('sha256')
    .update(`${process.version}\0${process.execArgv.join(' ')}\0`)
    .update(wrapped)
    .digest('hex');
  return `${HEADER}${key}`;
}

/** The file's bytes; null when there is none; 'untrusted' when it or its folder is not this user's alone. */
function readTrusted(file: string): Buffer | null | 'untrusted' {
  const uid = process.getuid?.() ?? 0;
  const ours = (st: fs.Stats): boolean => st.uid === uid && (st.mode & 0o022) === 0;
  let dir: fs.Stats;
  try {
    dir = fs.statSync(path.dirname(file));
  } catch {
    return null; // no folder: nothing to read, and the write will say why it failed
  }
  if (!dir.isDirectory() || !ours(dir)) return 'untrusted';
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return 'untrusted'; // a symlink (ELOOP) or unreadable
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile() || !ours(st)) return 'untrusted';
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
