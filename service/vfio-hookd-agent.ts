#!/usr/bin/env node
/**
 * vfio-hookd-agent: wiring only (logic in lib/agent). A user unit, one per
 * user session: follows vfio-hookd's Machine objects on the system bus and
 * starts and stops the user units of this user's running VMs on the user's
 * own systemd manager. READY=1 once it is subscribed on both buses and has
 * acted on what it read at start.
 *
 * SIGTERM/SIGINT: STOPPING=1 and exit; the units stay as they are (the VM
 * still runs; a new agent takes over where this one left).
 */
import { parseArgs } from 'node:util';
import { defaultAgentConfigPath } from '../lib/agent/agent-config.js';
import { startAgent } from '../lib/agent/run-agent.js';
import { Journal, Notifier } from '../lib/systemd/index.js';

const USAGE =
  'Usage: vfio-hookd-agent [--config FILE] [--system-bus-address ADDRESS] [--session-bus-address ADDRESS] [--journal-socket PATH]';

let parsed;
try {
  parsed = parseArgs({
    options: {
      config: { type: 'string' },
      'system-bus-address': { type: 'string' },
      'session-bus-address': { type: 'string' },
      'journal-socket': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
} catch (error) {
  process.stderr.write(`vfio-hookd-agent: ${(error as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
const values = parsed.values;
const log = new Journal({
  identifier: 'vfio-hookd-agent',
  ...(values['journal-socket'] !== undefined ? { socketPath: values['journal-socket'] } : {}),
});
const notifier = Notifier.fromEnv(process.env, { unsetEnvironment: true, onError: (error) => log.warning(error.message) });

function fail(message: string): never {
  log.error(message);
  process.exit(1);
}

let running;
try {
  running = await startAgent({
    ...(values['system-bus-address'] !== undefined ? { systemBusAddress: values['system-bus-address'] } : {}),
    ...(values['session-bus-address'] !== undefined ? { sessionBusAddress: values['session-bus-address'] } : {}),
    configPath: values.config ?? defaultAgentConfigPath(),
    log,
    onFatal: (error) => fail(error.message),
  });
} catch (error) {
  fail(`Cannot start: ${(error as Error).message}`);
}
notifier.ready('Following vfio-hookd');

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    notifier.stopping();
    running.stop();
    process.exit(0);
  });
}
