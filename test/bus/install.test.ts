/**
 * install.sh into a DESTDIR, as a packager runs it: what it installs, that a
 * second run changes nothing, and that --uninstall removes exactly that.
 * (With a DESTDIR it never calls systemctl and shows no demo.)
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { REPO, tempDir } from '../helpers/private-bus.js';
import { run } from '../helpers/command.js';

async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string): Promise<void> {
    for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      const rel = path.relative(root, full);
      if (rel.startsWith(path.join('usr', 'local', 'lib', 'vfio-hookd', 'node_modules'))) continue;
      out.push(entry.isDirectory() ? `${rel}/` : rel);
      if (entry.isDirectory()) await walk(full);
    }
  }
  await walk(root);
  return out.sort();
}

test('install.sh installs the daemon, unit, policy and hook; a second run is the same; --uninstall leaves nothing', async (t) => {
  t.timeout(300_000); // two builds and two production npm installs
  const dest = await tempDir(t, 'vfio-hookd-destdir-', 0o755);
  const env = { ...process.env, DESTDIR: dest };
  await run('bash', [path.join(REPO, 'install.sh'), '--prefix', '/usr/local'], { cwd: REPO, env, timeout: 240_000 });
  const first = await tree(dest);
  for (const expected of [
    'etc/systemd/system/vfio-hookd.service',
    'etc/systemd/user/vfio-hookd-agent.service',
    'etc/systemd/user/looking-glass-client@.service',
    'etc/systemd/user/scream-receiver@.service',
    'usr/local/lib/vfio-hookd/dist/bin/vfio-hookd-agent.js',
    'usr/local/lib/vfio-hookd/dist/bin/vfio-hookd-main.cjs',
    'etc/dbus-1/system.d/org.vfiohookd1.conf',
    'etc/libvirt/hooks/qemu.d/vfio-hookd',
    'usr/local/bin/vfio-hookctl',
    'usr/local/sbin/vfio-hookd',
    'usr/local/share/dbus-1/system-services/org.vfiohookd1.service',
    'usr/local/share/doc/vfio-hookd/vfio-hookd.toml.example',
    'usr/local/lib/systemd/catalog/vfio-hookd.catalog',
    'usr/local/lib/vfio-hookd/dist/bin/vfio-hookd.js',
  ]) {
    t.true(first.includes(expected), expected);
  }
  const unit = await fs.readFile(path.join(dest, 'etc/systemd/system/vfio-hookd.service'), 'utf8');
  t.regex(
    unit,
    /^ExecStart=\/\S+\/node --lite-mode --no-expose-wasm --max-semi-space-size=1 --max-old-space-size=48 --single-threaded \/usr\/local\/lib\/vfio-hookd\/dist\/bin\/vfio-hookd\.js$/m,
  );
  t.regex(unit, /^Type=notify$/m);
  // Reload() over the bus with the same absolute busctl as the hook: `systemctl reload` waits until it is done.
  t.regex(unit, /^ExecReload=\/\S+\/busctl --system --timeout=90 call org\.vfiohookd1 \/org\/vfiohookd1 org\.vfiohookd1\.Manager Reload$/m);
  t.notRegex(unit, /@[A-Z]+@/, 'every placeholder filled in');
  t.regex(unit, /^BusName=org\.vfiohookd1$/m);
  const agent = await fs.readFile(path.join(dest, 'etc/systemd/user/vfio-hookd-agent.service'), 'utf8');
  t.regex(
    agent,
    /^ExecStart=\/\S+\/node --lite-mode --no-expose-wasm --max-semi-space-size=1 --max-old-space-size=48 --single-threaded \/usr\/local\/lib\/vfio-hookd\/dist\/bin\/vfio-hookd-agent\.js$/m,
  );
  const hook = await fs.readFile(path.join(dest, 'etc/libvirt/hooks/qemu.d/vfio-hookd'), 'utf8');
  t.regex(hook, /^BUSCTL='\/\S+\/busctl'$/m, 'absolute busctl: NixOS hooks get no useful PATH');
  t.is((await fs.stat(path.join(dest, 'etc/libvirt/hooks/qemu.d/vfio-hookd'))).mode & 0o777, 0o755);

  await run('bash', [path.join(REPO, 'install.sh'), '--prefix', '/usr/local'], { cwd: REPO, env, timeout: 240_000 });
  t.deepEqual(await tree(dest), first, 'idempotent');

  await run('bash', [path.join(REPO, 'install.sh'), '--prefix', '/usr/local', '--uninstall'], { cwd: REPO, env, timeout: 240_000 });
  t.deepEqual(await tree(dest), []);
});
