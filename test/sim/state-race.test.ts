/**
 * One writer of the state at a time: the real vfio-hookctl executable,
 * writing directly (no daemon on its bus), races the daemon's DeviceLedger
 * on the same simulated host and state file. The state lock orders them, so
 * no claim is ever lost, whichever wins. Repeated, because a race that is
 * lost one time in ten must fail here too (with the lock taken out, it
 * fails every time).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeSim } from '../helpers/sim.js';
import { DeviceLedger } from '../../lib/lifecycle/device-ledger.js';
import { StateFile } from '../../lib/state/state-file.js';
import { ownerKey, vmOwner } from '../../lib/pci/owner.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ROUNDS = 6;

function cli(simDir: string, ...args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'service/vfio-hookctl.ts', '--simulate', 'reference-host', '--sim-dir', simDir, ...args],
      { cwd: REPO, timeout: 60_000 },
      (error, _stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stderr }),
    );
  });
}

test(`the CLI and the daemon detaching at once never lose a claim (${ROUNDS} rounds)`, async (t) => {
  for (let round = 0; round < ROUNDS; round++) {
    const { dir: simDir, kernel, engine } = await makeSim(t, 'reference-host');
    const ledger = new DeviceLedger({ engine, state: new StateFile(kernel.roots.run) });

    // The daemon detaches and gives back win10's GPU again and again for as long as the CLI runs.
    let cycles = 0;
    let done = false;
    const daemonSide = (async () => {
      while (!done) {
        await ledger.detach(vmOwner('win10'), ['0000:0b:00.0']);
        await ledger.reattach(vmOwner('win10'));
        cycles++;
      }
    })();
    const byHand = await cli(simDir, 'detach', '0000:06:00.3');
    const back = await cli(simDir, 'reattach', '0000:06:00.3');
    done = true;
    await daemonSide;
    t.is(byHand.code, 0, byHand.stderr);
    t.is(back.code, 0, back.stderr);
    t.true(cycles > 0, 'the daemon side ran while the CLI did');
    t.deepEqual([...(await ledger.read()).claims.keys()], [], `round ${round}: no claim left behind after ${cycles} daemon cycles`);

    // The CLI's claim survives a daemon working beside it.
    done = false;
    const again = (async () => {
      while (!done) {
        await ledger.detach(vmOwner('win10'), ['0000:0b:00.0']);
        await ledger.reattach(vmOwner('win10'));
      }
    })();
    t.is((await cli(simDir, 'detach', '0000:06:00.3')).code, 0);
    done = true;
    await again;
    const claims = (await ledger.read()).claims;
    t.is(
      claims.get('0000:06:00.3') && ownerKey(claims.get('0000:06:00.3')!.owner),
      'manual:root',
      `round ${round}: the CLI's claim was not lost`,
    );
    t.false(claims.has('0000:0b:00.0'), `round ${round}: the daemon's last reattach is recorded`);
    await kernel.close();
  }
});
