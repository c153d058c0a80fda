/**
 * A state save that fails never leaves a device moved without a record: the
 * write-ahead save failing stops the operation before any write; the final
 * save failing after a detach puts the devices back and refuses.
 */
import test from 'ava';
import { DeviceLedger, StateNotSaved } from '../../lib/lifecycle/device-ledger.js';
import { StateFile, type State } from '../../lib/state/state-file.js';
import { vmOwner } from '../../lib/pci/owner.js';
import { driversOf, makeSim } from '../helpers/sim.js';

const RX590 = ['0000:0b:00.0', '0000:0b:00.1'];
const HOST = { '0000:0b:00.0': 'amdgpu', '0000:0b:00.1': 'snd_hda_intel' };

/** A state file whose saves fail from the `failFrom`-th on, as a full or read-only run folder does. */
class FailingStateFile extends StateFile {
  saves = 0;
  constructor(
    run: string,
    readonly failFrom: number,
  ) {
    super(run);
  }
  override async save(state: State): Promise<void> {
    this.saves++;
    if (this.saves >= this.failFrom) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    return super.save(state);
  }
}

test('the write-ahead save failing refuses the detach before any sysfs write', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const ledger = new DeviceLedger({ engine: sim.engine, state: new FailingStateFile(sim.kernel.roots.run, 1) });
  await t.throwsAsync(ledger.detach(vmOwner('win10'), ['0000:0b:00.0']), { message: /ENOSPC/ });
  t.deepEqual(await driversOf(sim, RX590), HOST);
  t.is(await sim.overrideOf('0000:0b:00.0'), '(null)');
});

test('the save after the devices moved failing puts them back and refuses, naming the file and the cause', async (t) => {
  const sim = await makeSim(t, 'reference-host');
  const file = new FailingStateFile(sim.kernel.roots.run, 2);
  const ledger = new DeviceLedger({ engine: sim.engine, state: file });
  const error = await t.throwsAsync(ledger.detach(vmOwner('win10'), ['0000:0b:00.0']), { instanceOf: StateNotSaved });
  t.regex(
    error.message,
    /^Cannot record the detach of '0000:0b:00\.1', '0000:0b:00\.0' in '.*state\.json' \(ENOSPC: no space left on device, write\); the devices were put back \(.*\), refusing$/,
  );
  t.deepEqual(await driversOf(sim, RX590), HOST);
  t.is(await sim.overrideOf('0000:0b:00.0'), '(null)');
  t.is(await sim.overrideOf('0000:0b:00.1'), '(null)');
  // What is on disk is the write-ahead record; the next start's recovery finds the devices where it says.
  const restarted = new DeviceLedger({ engine: sim.engine, state: new StateFile(sim.kernel.roots.run) });
  await restarted.recover();
  t.deepEqual(await driversOf(sim, RX590), HOST);
  t.deepEqual([...(await restarted.read()).claims.keys()], []);
});
