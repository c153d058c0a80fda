#!/usr/bin/env node
/**
 * vfio-hookd: option parsing, then startDaemon() (lib/daemon/start-daemon.ts
 * has the steps: port, configuration, objects, export, name, READY=1).
 *
 * Installed, this is dist/bin/vfio-hookd-main.cjs, a CommonJS bundle that
 * service/vfio-hookd-launcher.ts (dist/bin/vfio-hookd.js) runs through a V8
 * code cache; so no top-level await here (CommonJS has none).
 */
import { parseArgs } from 'node:util';
import { DEFAULT_CONFIG_PATH } from '../lib/config/index.js';
import { checkConfigFile } from '../lib/config/check-config.js';
import { startDaemon } from '../lib/daemon/start-daemon.js';
import { Journal } from '../lib/systemd/index.js';

const USAGE =
  'Usage: vfio-hookd [--config FILE] [--simulate FIXTURE [--sim-dir DIR]] [--bus-address ADDRESS] [--run-root DIR] [--journal-socket PATH]\n' +
  '       vfio-hookd --check-config FILE';

// Until the journal is set up (it needs the options), usage errors go to stderr as they are.
function usageError(message: string): never {
  process.stderr.write(`vfio-hookd: ${message}\n${USAGE}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        config: { type: 'string' },
        'check-config': { type: 'string' },
        simulate: { type: 'string' },
        'sim-dir': { type: 'string' },
        'bus-address': { type: 'string' },
        'run-root': { type: 'string' },
        'journal-socket': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    usageError((error as Error).message);
  }
  const values = parsed.values;
  if (values['sim-dir'] !== undefined && values.simulate === undefined) usageError('--sim-dir needs --simulate');

  // A check of a file alone (lib/config/check-config.ts): no bus, no sysfs, no state.
  const checked = values['check-config'];
  if (checked !== undefined) {
    const others = Object.keys(values).filter((key) => key !== 'check-config');
    if (others.length > 0) usageError(`--check-config FILE takes no other option (got --${others.join(', --')})`);
    const { code, stderr } = await checkConfigFile(checked);
    for (const line of stderr) process.stderr.write(`${line}\n`);
    process.exit(code);
  }

  // Native journal protocol when stderr is the journal stream (systemd sets JOURNAL_STREAM), else <N> lines.
  const log = new Journal(values['journal-socket'] !== undefined ? { socketPath: values['journal-socket'] } : {});

  await startDaemon({
    configPath: values.config ?? DEFAULT_CONFIG_PATH,
    log,
    ...(values.simulate !== undefined ? { simulate: values.simulate } : {}),
    ...(values['sim-dir'] !== undefined ? { simDir: values['sim-dir'] } : {}),
    ...(values['bus-address'] !== undefined ? { busAddress: values['bus-address'] } : {}),
    ...(values['run-root'] !== undefined ? { runRoot: values['run-root'] } : {}),
  });
}

void main();
