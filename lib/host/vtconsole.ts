/**
 * `single-gpu = true`: take the virtual consoles off the frame buffer before
 * the card leaves, and put them back after.
 *
 * `/sys/class/vtconsole/vtconN/bind` reads 1 while that console driver
 * draws the VTs; writing 0 hands them to the dummy console (the kernel's
 * vt.c do_unbind_con_driver), 1 takes them back. fbcon's entry is the one
 * named `(M) frame buffer device`; the dummy console (`(S) dummy device`)
 * cannot be unbound and is left alone. The kernel tier checks the read-back
 * on bochs-drm with fbcon (test/kernel/guest/graphics.sh).
 */
import * as v from 'valibot';
import { BindFailed, DamagedState, q } from '../errors.js';
import type { HostChange, HostChangeRecord, HostContext } from './host-change.js';
import { vtconsoleDir, vtconsoleFile } from './host-layout.js';
import { needKernel, writeSysfs } from './sysfs-write.js';
import type { KernelPort } from '../pci/kernel-port.js';

export const VTCONSOLE_KIND = 'vtconsole-unbind';

const RecordSchema = v.object({
  kind: v.literal(VTCONSOLE_KIND),
  /** The consoles that were bound to a frame buffer, `vtcon1`, in the order unbound. */
  consoles: v.array(v.pipe(v.string(), v.regex(/^vtcon\d+$/))),
});
export type VtconsoleRecord = v.InferOutput<typeof RecordSchema>;

const FRAME_BUFFER = /frame ?buffer/i;

async function bound(port: KernelPort, name: string): Promise<boolean> {
  return (await port.readFile(vtconsoleFile(port.roots, name, 'bind')))?.trim() === '1';
}

/** The consoles drawn on a frame buffer now (no side effect). */
export async function planVtconsoleUnbind(context: HostContext): Promise<HostChange<VtconsoleRecord>> {
  const port = needKernel(context.kernel, 'unbind the virtual consoles');
  const consoles: string[] = [];
  for (const name of (await port.readDir(vtconsoleDir(port.roots))).filter((n) => /^vtcon\d+$/.test(n)).sort()) {
    const description = (await port.readFile(vtconsoleFile(port.roots, name, 'name')))?.trim() ?? '';
    if (FRAME_BUFFER.test(description) && (await bound(port, name))) consoles.push(name);
  }
  return {
    record: { kind: VTCONSOLE_KIND, consoles },
    describe: consoles.length === 0 ? 'no console on a frame buffer' : `unbinding the console ${consoles.join(', ')} from the frame buffer`,
    phase: 'before-detach',
    async apply() {
      for (const name of consoles) {
        const file = vtconsoleFile(port.roots, name, 'bind');
        await writeSysfs(port, file, '0\n', `unbind the console ${q(name)}`);
        if (await bound(port, name)) throw new BindFailed(`Cannot unbind the console ${q(name)}: ${q(file)} still reads 1 after writing 0`);
      }
    },
  };
}

/**
 * Writing 1 to fbcon's `bind` only takes back VTs held by a *system* console
 * driver (vt.c vt_bind looks for one without CON_DRIVER_FLAG_MODULE). On the
 * kernel tier's 6.12 guest both fbcon and the dummy console are `(M)`, so
 * the write does nothing there (seen in the kernel tier). Unbinding the
 * console that took the VTs over instead (the dummy, now bound) hands them
 * to the first other registered driver (vt.c do_unbind_con_driver), fbcon.
 */
async function unbindTheTaker(port: KernelPort, name: string): Promise<void> {
  for (const other of (await port.readDir(vtconsoleDir(port.roots))).filter((n) => /^vtcon\d+$/.test(n) && n !== name).sort()) {
    const description = (await port.readFile(vtconsoleFile(port.roots, other, 'name')))?.trim() ?? '';
    if (FRAME_BUFFER.test(description) || !(await bound(port, other))) continue;
    await writeSysfs(port, vtconsoleFile(port.roots, other, 'bind'), '0\n', `hand the VTs of ${q(other)} back to ${q(name)}`);
    if (await bound(port, name)) return;
  }
}

/** Bind the recorded consoles again (a bound one is skipped), and read each back. */
export async function undoVtconsoleUnbind(input: HostChangeRecord, context: HostContext): Promise<void> {
  const parsed = v.safeParse(RecordSchema, input);
  if (!parsed.success)
    throw new DamagedState(`The record of unbound consoles is not valid; bind them by hand: echo 1 > /sys/class/vtconsole/vtcon1/bind`);
  const port = needKernel(context.kernel, 'bind the virtual consoles');
  const failures: string[] = [];
  for (const name of [...parsed.output.consoles].reverse()) {
    try {
      if (await bound(port, name)) continue;
      await writeSysfs(port, vtconsoleFile(port.roots, name, 'bind'), '1\n', `bind the console ${q(name)} again`);
      if (!(await bound(port, name))) await unbindTheTaker(port, name);
      if (!(await bound(port, name))) throw new BindFailed(`Cannot bind the console ${q(name)} again: its bind still reads 0`);
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  if (failures.length > 0) throw new Error(failures.join('; '));
}
