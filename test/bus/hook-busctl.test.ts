/**
 * The hook finds busctl when it runs: the path written at install time
 * first, then the usual places (BUSCTL_PATHS, /run/current-system/sw/bin
 * among them), then the PATH. A busctl found nowhere is no answer, like an
 * unreachable daemon: a VM about to start with <hostdev> or <shmem> fails
 * closed, every other VM and step goes on.
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { REPO, startDaemon, startPrivateBus, tempDir } from '../helpers/private-bus.js';
import { daemonRuntime, runHook, HOOK_ENV, type InstalledHook } from '../helpers/hook.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

const PLAIN_XML = "<domain type='kvm'><name>plain</name><memory>1048576</memory><devices><disk type='file'/></devices></domain>";
const SOURCE = await fs.readFile(path.join(REPO, 'hooks', 'qemu'), 'utf8');
const GONE = '/nonexistent/vfio-hookd-test/store/abc-systemd-255/bin/busctl';

/** The hook with these values in place of its BUSCTL, BUSCTL_PATHS, BUS_ADDRESS and RUNTIME lines. */
async function install(
  t: ExecutionContext,
  values: { busctl: string; paths?: string; busAddress: string; runtime?: string },
): Promise<InstalledHook> {
  const dir = await tempDir(t, 'vfio-hookd-hook-', 0o755);
  const runtime = values.runtime ?? path.join(await tempDir(t, 'vfio-hookd-runtime-'), 'vfio-hookd');
  let text = SOURCE.replace(/^BUSCTL=.*$/m, `BUSCTL='${values.busctl}'`)
    .replace(/^BUS_ADDRESS=.*$/m, `BUS_ADDRESS='${values.busAddress}'`)
    .replace(/^RUNTIME=.*$/m, `RUNTIME='${runtime}'`);
  if (values.paths !== undefined) text = text.replace(/^BUSCTL_PATHS=.*$/m, `BUSCTL_PATHS='${values.paths}'`);
  const hook = path.join(dir, 'vfio-hookd');
  await fs.writeFile(hook, text, { mode: 0o755 });
  return { path: hook, runtime };
}

/** A PATH holding the hook's other tools and, when asked, busctl: each a link to the machine's own. */
async function toolPath(t: ExecutionContext, withBusctl: boolean): Promise<string> {
  const dir = await tempDir(t, 'vfio-hookd-tools-', 0o755);
  for (const tool of ['cat', 'mkdir', 'mktemp', 'rm', 'tr', ...(withBusctl ? ['busctl'] : [])]) {
    await fs.symlink(path.join('/usr/bin', tool), path.join(dir, tool));
  }
  return dir;
}

test('the shipped hook looks in /usr/bin, /bin and /run/current-system/sw/bin after its own path, and install.sh can still write that path', (t) => {
  t.regex(SOURCE, /^BUSCTL=busctl$/m);
  t.regex(SOURCE, /^BUSCTL_PATHS='\/usr\/bin\/busctl \/bin\/busctl \/run\/current-system\/sw\/bin\/busctl'$/m);
  t.is(SOURCE.match(/^BUSCTL=/gm)?.length, 1, 'one line for install.sh to replace');
});

test('an install-time busctl that is gone (a garbage-collected store path) falls back to the usual places: a whole lifecycle works', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const hook = await install(t, { busctl: GONE, busAddress: bus.address, runtime: daemonRuntime(daemon) });
  for (const [op, sub] of [
    ['prepare', 'begin'],
    ['started', 'begin'],
    ['release', 'end'],
  ] as const) {
    t.deepEqual(await runHook(hook, ['win10', op, sub, '-'], WIN10_XML), { code: 0, stdout: '', stderr: '' }, `${op} ${sub}`);
  }
});

test('with neither the install-time path nor the usual places, busctl on the PATH is used; a directory or a file without x is skipped', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const junk = await tempDir(t, 'vfio-hookd-junk-', 0o755);
  await fs.mkdir(path.join(junk, 'busctl'));
  await fs.writeFile(path.join(junk, 'busctl-not-x'), '#!/bin/sh\nexit 0\n', { mode: 0o644 });
  const hook = await install(t, {
    busctl: path.join(junk, 'busctl'),
    paths: `${path.join(junk, 'busctl-not-x')} /nonexistent/vfio-hookd-test/busctl`,
    busAddress: bus.address,
    runtime: daemonRuntime(daemon),
  });
  const env = { ...HOOK_ENV, PATH: await toolPath(t, true) };
  t.deepEqual(await runHook(hook, ['win10', 'prepare', 'begin', '-'], WIN10_XML, env), { code: 0, stdout: '', stderr: '' });
  t.deepEqual(await runHook(hook, ['win10', 'release', 'end', '-'], WIN10_XML, env), { code: 0, stdout: '', stderr: '' });
});

test('no busctl anywhere: a VM with <hostdev> or <shmem> fails closed at prepare and start, any other VM or step goes on', async (t) => {
  const hook = await install(t, {
    busctl: GONE,
    paths: '/nonexistent/vfio-hookd-test/usr/bin/busctl',
    busAddress: 'unix:path=/nonexistent/vfio-hookd-test-bus',
  });
  const env = { ...HOOK_ENV, PATH: await toolPath(t, false) };
  const why = `busctl not found: not at '${GONE}', '/nonexistent/vfio-hookd-test/usr/bin/busctl', nor on the PATH`;
  for (const operation of ['prepare', 'start']) {
    t.deepEqual(
      await runHook(hook, ['win10', operation, 'begin', '-'], WIN10_XML, env),
      {
        code: 1,
        stdout: '',
        stderr:
          `vfio-hookd: no answer from vfio-hookd (${why}); VM 'win10' has <hostdev> or <shmem> devices, so it does not start without it; ` +
          "install systemd's busctl (or reinstall vfio-hookd) and try again\n",
      },
      operation,
    );
    t.deepEqual(
      await runHook(hook, ['plain', operation, 'begin', '-'], PLAIN_XML, env),
      {
        code: 0,
        stdout: '',
        stderr: `vfio-hookd: no answer from vfio-hookd (${why}); VM 'plain' has no <hostdev> and no <shmem>, starting it anyway\n`,
      },
      operation,
    );
  }
  for (const [operation, sub] of [
    ['started', 'begin'],
    ['release', 'end'],
  ] as const) {
    t.deepEqual(await runHook(hook, ['win10', operation, sub, '-'], WIN10_XML, env), {
      code: 0,
      stdout: '',
      stderr: `vfio-hookd: no answer from vfio-hookd (${why}); nothing done for '${operation} ${sub}' of VM 'win10'\n`,
    });
  }
  // It gave up before making the XML's file: nothing to leave behind.
  t.deepEqual(await fs.readdir(hook.runtime).catch(() => []), []);
});
