#!/usr/bin/env node
/**
 * vfio-hookd: wiring only. Build the kernel port (real or simulated), the
 * backend and the Manager object, export it, THEN own `org.vfiohookd1`, THEN
 * send READY=1 (systemd's hostnamed order). SIGTERM/SIGINT: STOPPING=1,
 * release the name, disconnect, exit 0.
 */
import { parseArgs } from 'node:util';
import dbus from 'dbus-next';
import { DEFAULT_ROOTS } from '../lib/roots.js';
import { openRealKernel } from '../lib/pci/real-kernel-factory.js';
import { PciEngine } from '../lib/pci/engine.js';
import type { KernelPort } from '../lib/pci/kernel-port.js';
import { openSimulation } from '../lib/sim/index.js';
import { StateFile } from '../lib/state/state-file.js';
import { Journal, Notifier } from '../lib/systemd/index.js';
import { ROOT_PATH } from '../lib/bus/object-path.js';
import { ManagerInterface } from '../lib/bus/manager-interface.js';
import { EngineBackend } from '../lib/bus/engine-backend.js';
import { VERSION } from '../lib/cli/hookctl.js';

const BUS_NAME = 'org.vfiohookd1';
const USAGE = 'Usage: vfio-hookd [--simulate FIXTURE [--sim-dir DIR]] [--bus-address ADDRESS] [--run-root DIR]';

const journal = new Journal();

function fail(message: string, code = 1): never {
  journal.error(message);
  process.exit(code);
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      simulate: { type: 'string' },
      'sim-dir': { type: 'string' },
      'bus-address': { type: 'string' },
      'run-root': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
} catch (error) {
  fail(`${(error as Error).message}\n${USAGE}`, 2);
}
const values = parsed.values;
if (values['sim-dir'] !== undefined && values.simulate === undefined) fail(`--sim-dir needs --simulate\n${USAGE}`, 2);

const port: KernelPort =
  values.simulate !== undefined
    ? await openSimulation(values.simulate, values['sim-dir'] !== undefined ? { dir: values['sim-dir'] } : {})
    : await openRealKernel({ ...DEFAULT_ROOTS, run: values['run-root'] ?? DEFAULT_ROOTS.run });
const runRoot = values['run-root'] ?? port.roots.run;

const backend = new EngineBackend({ engine: new PciEngine(port), state: new StateFile(runRoot) });
const manager = new ManagerInterface(backend, {
  version: VERSION,
  configFile: '',
  onError: (member, error) => {
    const e = error as Error;
    journal.warning(`${member} failed: ${e.message ?? String(error)}`, { DBUS_MEMBER: member, ERROR_STACK: e.stack });
  },
});

const bus = values['bus-address'] !== undefined ? dbus.sessionBus({ busAddress: values['bus-address'] }) : dbus.systemBus();
bus.on('error', (error: Error) => fail(`D-Bus connection failed: ${error.message}`));

const notifier = Notifier.fromEnv(process.env, {
  unsetEnvironment: true,
  onError: (error) => journal.warning(error.message),
});

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  notifier.stopping(`Stopping on ${signal}`);
  notifier.close();
  try {
    await bus.releaseName(BUS_NAME);
  } catch (error) {
    journal.warning(`Cannot release '${BUS_NAME}': ${(error as Error).message}`);
  }
  bus.disconnect();
  await port.close();
  journal.info(`vfio-hookd stopped on ${signal}`);
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));

bus.export(ROOT_PATH, manager);

let reply: number;
try {
  reply = await bus.requestName(BUS_NAME, dbus.NameFlag.DO_NOT_QUEUE);
} catch (error) {
  fail(`Cannot own the bus name '${BUS_NAME}': ${(error as Error).message}`);
}
if (reply !== dbus.RequestNameReply.PRIMARY_OWNER && reply !== dbus.RequestNameReply.ALREADY_OWNER) {
  fail(`The bus name '${BUS_NAME}' is already owned by another process (is vfio-hookd already running?), exiting`);
}

notifier.ready('Ready');
notifier.startWatchdog();
journal.info(`vfio-hookd ${VERSION} owns '${BUS_NAME}'${values.simulate !== undefined ? ` (simulated host '${values.simulate}')` : ''}`);

