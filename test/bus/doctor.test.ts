/**
 * Bus tier: `vfio-hookctl doctor` against the real daemon on a private bus,
 * on a simulated reference host set up right (test/helpers/doctor-host.ts):
 * every check passes and it exits 0; the daemon's own view (its version,
 * its configuration error) is what doctor reports.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO, startDaemon, startPrivateBus } from '../helpers/private-bus.js';
import { setUpRight } from '../helpers/doctor-host.js';
import { WIN10_CONFIG } from '../helpers/win10.js';
import { VERSION } from '../../lib/version.js';

const exec = promisify(execFile);
const CONFIG = `[daemon]\nqemu-user = "root"\n${WIN10_CONFIG}`;

async function doctor(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(
      process.execPath,
      ['--import', 'tsx', path.join(REPO, 'service', 'vfio-hookctl.ts'), 'doctor', ...args],
      {
        cwd: REPO,
        timeout: 60_000,
      },
    );
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

test('on a host set up right, with the daemon running, every check passes and doctor exits 0', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: CONFIG });
  await setUpRight(daemon.simDir, CONFIG);
  const args = ['--simulate', 'reference-host', '--sim-dir', daemon.simDir, '--bus-address', bus.address, '--config', daemon.configPath];
  const r = await doctor(args);
  t.is(r.code, 0, r.stdout + r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  t.true(
    lines.slice(0, -1).every((l) => l.startsWith('[ok  ] ')),
    r.stdout,
  );
  t.true(lines.includes(`[ok  ] vfio-hookd: running, version ${VERSION}, configuration ${daemon.configPath}`), r.stdout);
  t.regex(lines.at(-1)!, /^\d+ checks: \d+ ok, 0 warnings, 0 problems, 0 not checked$/);

  const json = await doctor([...args, '--json', 'win10']);
  const parsed = JSON.parse(json.stdout) as { exitCode: number; checks: { id: string; status: string }[] };
  t.is(parsed.exitCode, 0);
  t.true(parsed.checks.some((c) => c.id === 'vm.win10.plan' && c.status === 'ok'));
});

test("a configuration the daemon could not load is reported from the daemon's own ConfigError, and doctor exits 1", async (t) => {
  const bus = await startPrivateBus(t);
  // Started on a broken file, the daemon runs with no VM managed and says why in ConfigError (hooks of passthrough VMs are refused).
  const daemon = await startDaemon(t, bus, { config: '[vm.win10\n' });
  await setUpRight(daemon.simDir, '[vm.win10\n');
  const r = await doctor([
    '--simulate',
    'reference-host',
    '--sim-dir',
    daemon.simDir,
    '--bus-address',
    bus.address,
    '--config',
    daemon.configPath,
  ]);
  t.is(r.code, 1, r.stdout);
  t.regex(r.stdout, /\[FAIL\] the daemon's configuration: .*vfio-hookd\.toml:1:\d+: invalid TOML/);
  t.regex(r.stdout, /\[FAIL\] configuration: .*vfio-hookd\.toml:1:\d+: invalid TOML/);
});
