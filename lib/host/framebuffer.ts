/**
 * `single-gpu = true`: unbind the firmware's frame buffer (the EFI GOP or
 * VESA mode the boot loader left, driven by efifb, vesafb or simpledrm) from
 * its platform driver before the card leaves, and bind it back after.
 *
 * They are platform devices: `efi-framebuffer.0` on driver
 * `efi-framebuffer` (efifb), `simple-framebuffer.0` on `simple-framebuffer`
 * (simpledrm, or simplefb), `vesa-framebuffer.0` on `vesa-framebuffer`
 * (vesafb). A native driver that loaded (amdgpu, i915, bochs-drm) usually
 * removed that device already (the aperture helpers unregister it), so on
 * many hosts there is nothing to unbind and the record says so. A SeaBIOS
 * guest has none either: the kernel tier says SKIPPED for this half.
 */
import * as v from 'valibot';
import { BindFailed, DamagedState, q } from '../errors.js';
import type { KernelPort } from '../pci/kernel-port.js';
import type { HostChange, HostChangeRecord, HostContext } from './host-change.js';
import { platformDeviceDir, platformDriverDir, platformDriverFile, platformDriverLink } from './host-layout.js';
import { needKernel, writeSysfs } from './sysfs-write.js';

export const FRAMEBUFFER_KIND = 'framebuffer-unbind';

/** The platform drivers of firmware frame buffers. */
export const FRAMEBUFFER_DRIVERS = ['efi-framebuffer', 'simple-framebuffer', 'vesa-framebuffer'] as const;

const RecordSchema = v.object({
  kind: v.literal(FRAMEBUFFER_KIND),
  /** Each device that was bound, with its driver, in the order unbound. */
  devices: v.array(
    v.object({
      driver: v.picklist(FRAMEBUFFER_DRIVERS),
      device: v.pipe(v.string(), v.regex(/^[A-Za-z0-9._-]+$/)),
    }),
  ),
});
export type FramebufferRecord = v.InferOutput<typeof RecordSchema>;

async function boundTo(port: KernelPort, device: string): Promise<string | null> {
  const link = await port.readLink(platformDriverLink(port.roots, device));
  return link === null ? null : link.slice(link.lastIndexOf('/') + 1);
}

export async function planFramebufferUnbind(context: HostContext): Promise<HostChange<FramebufferRecord>> {
  const port = needKernel(context.kernel, 'unbind the firmware frame buffer');
  const devices: FramebufferRecord['devices'] = [];
  for (const driver of FRAMEBUFFER_DRIVERS) {
    for (const entry of (await port.readDir(platformDriverDir(port.roots, driver))).sort()) {
      // A driver's folder lists its devices as links named after them, beside bind, unbind, uevent and module.
      if (!entry.startsWith(`${driver}.`)) continue;
      if ((await boundTo(port, entry)) === driver) devices.push({ driver, device: entry });
    }
  }
  return {
    record: { kind: FRAMEBUFFER_KIND, devices },
    describe:
      devices.length === 0
        ? 'no firmware frame buffer bound'
        : `unbinding the frame buffer ${devices.map((d) => `${d.device} from ${d.driver}`).join(', ')}`,
    phase: 'before-detach',
    async apply() {
      for (const { driver, device } of devices) {
        await writeSysfs(port, platformDriverFile(port.roots, driver, 'unbind'), device, `unbind ${q(device)} from ${q(driver)}`);
        if ((await boundTo(port, device)) !== null) throw new BindFailed(`Cannot unbind ${q(device)} from ${q(driver)}: it is still bound`);
      }
    },
  };
}

/** Bind each recorded device back (skipped when bound, or gone: a native driver removed it). */
export async function undoFramebufferUnbind(input: HostChangeRecord, context: HostContext): Promise<void> {
  const parsed = v.safeParse(RecordSchema, input);
  if (!parsed.success)
    throw new DamagedState(
      `The record of unbound frame buffers is not valid; bind it by hand (echo efi-framebuffer.0 > /sys/bus/platform/drivers/efi-framebuffer/bind)`,
    );
  const port = needKernel(context.kernel, 'bind the firmware frame buffer');
  const failures: string[] = [];
  for (const { driver, device } of [...parsed.output.devices].reverse()) {
    try {
      if (!(await port.exists(platformDeviceDir(port.roots, device)))) continue;
      if ((await boundTo(port, device)) !== null) continue;
      await writeSysfs(port, platformDriverFile(port.roots, driver, 'bind'), device, `bind ${q(device)} to ${q(driver)} again`);
      if ((await boundTo(port, device)) !== driver)
        throw new BindFailed(`Cannot bind ${q(device)} to ${q(driver)} again: it is not bound after the write`);
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  if (failures.length > 0) throw new Error(failures.join('; '));
}
