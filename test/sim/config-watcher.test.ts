/**
 * ConfigWatcher against a real directory: real fs.watch (inotify), real
 * renames, real debounce. Serial, because each test also checks that close()
 * leaves no watcher or timer behind, which is a count over the process.
 */

import * as fsp from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { InvalidConfig } from '../../lib/errors.js';
import { ConfigWatcher, type Config } from '../../lib/config/index.js';
import { tempDir } from '../helpers/temp-dir.js';

type WatcherEvent = { type: 'change'; config: Config } | { type: 'error'; error: InvalidConfig };

const LG_1080 = '[vm.win10]\nuser = "alex"\n[vm.win10.looking-glass]\nresolution = "1920x1080"\n';
const LG_1440 = '[vm.win10]\nuser = "alex"\n[vm.win10.looking-glass]\nresolution = "2560x1440"\n';
const MiB = 1024 * 1024;

/** Watchers and timers alive in this process, by kind. */
function handles(): { watchers: number; timers: number } {
  const info = process.getActiveResourcesInfo();
  return { watchers: info.filter((r) => r === 'FSEventWrap').length, timers: info.filter((r) => r === 'Timeout').length };
}

/**
 * A watcher on `path` whose events queue up for `next()`, closed after the
 * test; the teardown also asserts that closing released every handle.
 */
function open(t: ExecutionContext, path: string, debounceMs = 50) {
  const before = handles();
  const watcher = new ConfigWatcher({ path, debounceMs });
  const queue: WatcherEvent[] = [];
  const waiters: ((event: WatcherEvent) => void)[] = [];
  const push = (event: WatcherEvent): void => {
    const waiter = waiters.shift();
    if (waiter) waiter(event);
    else queue.push(event);
  };
  watcher.on('change', (config) => push({ type: 'change', config }));
  watcher.on('error', (error) => push({ type: 'error', error }));

  /** The next event, failing the test after 5 s. */
  const next = (): Promise<WatcherEvent> => {
    const queued = queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no watcher event within 5 s')), 5000);
      waiters.push((event) => {
        clearTimeout(timer);
        resolve(event);
      });
    });
  };
  t.teardown(() => {
    watcher.close();
  });
  return { watcher, next, queue, before };
}

function lgSize(config: Config): number | undefined {
  return config.vms.get('win10')?.lookingGlass?.sizeBytes;
}

test.serial('starts with an empty configuration when the file does not exist, and picks it up when written', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  const { watcher, next } = open(t, path);

  const initial = await watcher.start();
  t.is(initial.vms.size, 0);
  t.is(watcher.current, initial);

  await fsp.writeFile(path, LG_1080);
  const event = await next();
  t.is(event.type, 'change');
  t.is(event.type === 'change' ? lgSize(event.config) : 0, 32 * MiB);
  t.is(watcher.current === null ? 0 : lgSize(watcher.current), 32 * MiB);
});

test.serial('a file replaced by rename (write a temp file, rename it over, as vim and sed -i do) is a change', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080);
  const { watcher, next } = open(t, path);
  t.is(lgSize(await watcher.start()), 32 * MiB);

  const temp = join(dir, '.vfio-hookd.toml.swp');
  await fsp.writeFile(temp, LG_1440);
  await fsp.rename(temp, path);
  const event = await next();
  t.is(event.type, 'change');
  t.is(event.type === 'change' ? lgSize(event.config) : 0, 64 * MiB);

  // And the watch survives the replacement: the next in-place write is seen too.
  await fsp.writeFile(path, LG_1080);
  const again = await next();
  t.is(again.type === 'change' ? lgSize(again.config) : 0, 32 * MiB);
});

test.serial('a broken file is an error event with line and column, and the previous configuration stays current', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080);
  const { watcher, next } = open(t, path);
  const good = await watcher.start();

  await fsp.writeFile(path, '[vm.win10]\nuser = "alex"\n[vm.win10.looking-glass]\nresolution = "1920x1080"\nmode = "0669"\n');
  const event = await next();
  t.is(event.type, 'error');
  t.true(event.type === 'error' && event.error instanceof InvalidConfig);
  t.is(
    event.type === 'error' ? event.error.message : '',
    `${path}:5:8: vm.win10.looking-glass.mode: invalid mode '0669': expected an octal mode like '0660'`,
  );
  t.is(watcher.current, good);

  await fsp.writeFile(path, '[vm.win10\n');
  const syntax = await next();
  t.is(syntax.type === 'error' ? syntax.error.message : '', `${path}:1:10: invalid TOML: illegal character in key`);
  t.is(watcher.current, good);

  // Fixing it is a change again.
  await fsp.writeFile(path, LG_1440);
  const fixed = await next();
  t.is(fixed.type === 'change' ? lgSize(fixed.config) : 0, 64 * MiB);
});

test.serial('saving the same text again emits nothing; a burst of writes is one reload', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080);
  // A debounce far above the four writes' time even on a loaded machine (at 100 ms a busy CI split the burst in two).
  const { watcher, next, queue } = open(t, path, 1500);
  await watcher.start();

  await fsp.writeFile(path, LG_1080); // unchanged: no event
  await fsp.writeFile(path, '[vm.other]\n'); // a burst: only the last text counts
  await fsp.writeFile(path, '[vm.another]\n');
  await fsp.writeFile(path, LG_1440);
  const event = await next();
  t.is(event.type === 'change' ? lgSize(event.config) : 0, 64 * MiB);
  t.deepEqual(queue, [], 'nothing else was emitted');
});

test.serial('reload() reads the file now: it resolves with the new configuration, or rejects and keeps the old one', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080);
  // A long debounce, so that only reload() can be what reads the file here.
  const { watcher, next } = open(t, path, 60_000);
  const good = await watcher.start();

  await fsp.writeFile(path, '[vm.win10]\nforce = "yes"\n');
  const error = await t.throwsAsync(() => watcher.reload(), { instanceOf: InvalidConfig });
  t.is(error.message, `${path}:2:9: vm.win10.force: expected true or false, got string 'yes'`);
  t.is((await next()).type, 'error', 'listeners hear about it too');
  t.is(watcher.current, good);

  await fsp.writeFile(path, LG_1440);
  const reloaded = await watcher.reload();
  t.is(lgSize(reloaded), 64 * MiB);
  t.is(watcher.current, reloaded);
  t.is((await next()).type, 'change');
});

test.serial('a missing directory is waited for on its parent, then followed', async (t) => {
  const dir = await tempDir(t);
  const confDir = join(dir, 'etc', 'vfio-hookd');
  const path = join(confDir, 'vfio-hookd.toml');
  const { watcher, next } = open(t, path);
  t.is((await watcher.start()).vms.size, 0);

  await fsp.mkdir(confDir, { recursive: true });
  await fsp.writeFile(path, LG_1080);
  // The directory appearing may already reload (still no file: no change), then the file does.
  const event = await next();
  t.is(event.type === 'change' ? lgSize(event.config) : 0, 32 * MiB);
});

test.serial('a deleted file is an empty configuration; a deleted directory is waited for again', async (t) => {
  const dir = await tempDir(t);
  const confDir = join(dir, 'vfio-hookd');
  await fsp.mkdir(confDir);
  const path = join(confDir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080);
  const { watcher, next } = open(t, path);
  await watcher.start();

  await fsp.rm(confDir, { recursive: true });
  const emptied = await next();
  t.is(emptied.type === 'change' ? emptied.config.vms.size : -1, 0);

  await fsp.mkdir(confDir);
  await fsp.writeFile(path, LG_1440);
  const back = await next();
  t.is(back.type === 'change' ? lgSize(back.config) : 0, 64 * MiB);
});

test.serial('close() leaves no watcher and no timer behind, even with a reload pending', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  const { watcher, before, queue } = open(t, path, 60_000);
  await watcher.start();
  t.is(handles().watchers, before.watchers + 1);

  await fsp.writeFile(path, LG_1080); // schedules a reload 60 s from now
  await new Promise((resolve) => setImmediate(resolve));
  watcher.close();
  // fs.watch handles go away on the next turn of the loop.
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(handles(), before);
  t.deepEqual(queue, []);
  t.is(watcher.current?.vms.size, 0, 'the pending reload never ran');
});

test.serial('an unreadable path is an error event, not a crash', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080);
  const { watcher, next } = open(t, path);
  await watcher.start();

  await fsp.rm(path);
  await fsp.mkdir(path); // a directory where the file was
  const event = await next();
  t.is(event.type === 'error' ? event.error.message : '', `Cannot read configuration '${path}': it is a directory`);
  t.is(lgSize(watcher.current!), 32 * MiB);
});

test.serial('a file others may change is refused like a broken one: an error event, and the previous configuration stays', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080, { mode: 0o644 });
  const { watcher, next } = open(t, path);
  const good = await watcher.start();
  const why = 'it decides which devices leave the host, so only root may be able to change it';

  // A chmod alone is an event too (inotify's IN_ATTRIB).
  await fsp.chmod(path, 0o666);
  const writable = await next();
  t.is(
    writable.type === 'error' ? writable.error.message : '',
    `Cannot trust configuration '${path}': the file is writable by group and others (mode 0666); ${why}; run "chmod go-w '${path}'", refusing`,
  );
  t.is(watcher.current, good);

  // What an untrusted writer puts in it is never loaded.
  await fsp.writeFile(path, LG_1440);
  const stillWritable = await next();
  t.is(stillWritable.type, 'error');
  t.is(watcher.current, good);

  // Another user's file renamed in: one atomic change, so one event.
  const theirs = join(dir, '.vfio-hookd.toml.new');
  await fsp.writeFile(theirs, LG_1440, { mode: 0o644 });
  await fsp.chown(theirs, 12345, 12345);
  await fsp.rename(theirs, path);
  const foreign = await next();
  t.is(
    foreign.type === 'error' ? foreign.error.message : '',
    `Cannot trust configuration '${path}': the file is owned by uid 12345; ${why}; run "chown root:root '${path}'", refusing`,
  );
  t.is(watcher.current, good);
  await t.throwsAsync(() => watcher.reload(), {
    instanceOf: InvalidConfig,
    message: foreign.type === 'error' ? foreign.error.message : '',
  });
  t.is((await next()).type, 'error', 'reload() reports it to listeners too');

  // Fixed, the file's text (now root's) is loaded.
  await fsp.chown(path, 0, 0);
  const fixed = await next();
  t.is(fixed.type === 'change' ? lgSize(fixed.config) : 0, 64 * MiB);
});

test.serial('a refusal at start rejects start(), and the fix is picked up as a change', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'vfio-hookd.toml');
  await fsp.writeFile(path, LG_1080, { mode: 0o644 });
  await fsp.chmod(dir, 0o777);
  const { watcher, next } = open(t, path);
  await t.throwsAsync(() => watcher.start(), {
    instanceOf: InvalidConfig,
    message:
      `Cannot trust configuration '${path}': the folder '${dir}' is writable by group and others (mode 0777); ` +
      `it decides which devices leave the host, so only root may be able to change it; run "chmod go-w '${dir}'", refusing`,
  });
  t.is(watcher.current, null);

  await fsp.chmod(dir, 0o755);
  const fixed = await next();
  t.is(fixed.type === 'change' ? lgSize(fixed.config) : 0, 32 * MiB);
});
