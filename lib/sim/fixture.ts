/**
 * A simulated host's description: its PCI devices, drivers, processes,
 * mounts. The built-in hosts are in `hosts/`; a user may write their own as
 * JSON (`vfio-hookctl --simulate ./my-host.json`), validated here.
 */
import fs from 'node:fs/promises';
import * as v from 'valibot';
import { InvalidConfig, q } from '../errors.js';
import { isPciAddress } from '../pci/address.js';

const Address = v.pipe(
  v.string(),
  v.check(isPciAddress, (issue) => `expected a PCI address like '0000:0b:00.0', got ${q(issue.input)}`),
);
const HexId = v.pipe(v.string(), v.regex(/^[0-9a-f]{4}$/, 'expected four lowercase hex digits'));
const Name = v.pipe(v.string(), v.regex(/^[A-Za-z0-9_.:-]+$/, 'expected a plain name'));

const BlockDevice = v.object({
  /** `nvme0n1`. */
  name: Name,
  /** `major:minor`, as in `/sys/class/block/X/dev` and mountinfo. */
  dev: v.pipe(v.string(), v.regex(/^\d+:\d+$/)),
  partitions: v.optional(v.array(v.object({ name: Name, dev: v.pipe(v.string(), v.regex(/^\d+:\d+$/)) })), []),
});

/** The kinds of input device a simulated USB controller can carry; `gamepad` is one the host does not depend on. */
const INPUT_KINDS = ['keyboard', 'mouse', 'gamepad'] as const;

const InputDevice = v.object({
  /** The `name` attribute, as the device reports it: `Logitech USB Keyboard`. */
  name: v.pipe(
    v.string(),
    v.regex(/^[^\u0000-\u001f\u007f]{1,80}$/, 'expected a device name of 1 to 80 characters without control characters'),
  ),
  kind: v.picklist(INPUT_KINDS, `expected one of ${INPUT_KINDS.map((k) => q(k)).join(', ')}`),
});

const Device = v.object({
  address: Address,
  vendor: HexId,
  device: HexId,
  subsystemVendor: v.optional(HexId),
  subsystemDevice: v.optional(HexId),
  /** `0x030000`. */
  class: v.pipe(v.string(), v.regex(/^0x[0-9a-f]{6}$/, "expected a class code like '0x030000'")),
  revision: v.optional(v.pipe(v.string(), v.regex(/^[0-9a-f]{2}$/))),
  /** The upstream bridge, for the sysfs path; a root-bus device when absent. */
  parent: v.optional(Address),
  group: v.nullable(v.number()),
  /** Bound at "boot"; null or absent: driverless. */
  driver: v.optional(v.nullable(Name)),
  /** What drivers_probe binds with no override; defaults to `driver`. */
  hostDriver: v.optional(v.nullable(Name)),
  override: v.optional(v.nullable(Name)),
  bootVga: v.optional(v.boolean()),
  resetMethod: v.optional(v.array(Name)),
  /** DRM nodes the host driver creates (`card1`, `renderD129`). */
  drm: v.optional(v.array(Name), []),
  /** Frame buffers the host driver creates (`fb0`). */
  fb: v.optional(v.array(Name), []),
  /** Devices linked to this one as consumers (a GPU's HDMI audio). */
  consumers: v.optional(v.array(Address), []),
  /** Network interfaces the host driver creates. */
  net: v.optional(v.array(v.object({ name: Name, up: v.boolean() })), []),
  /** Block devices the host driver creates. */
  block: v.optional(v.array(BlockDevice), []),
  /**
   * Input devices plugged into this USB controller, one port each; they
   * appear under the controller while its host driver is bound.
   */
  input: v.optional(v.array(InputDevice), []),
  comment: v.optional(v.string()),
});

const Driver = v.object({
  /** The driver's unbind never returns (an NVIDIA card that hangs). */
  hangsOnUnbind: v.optional(v.boolean(), false),
  /** The driver's probe fails: drivers_probe leaves the device driverless, bind gives ENODEV. */
  failsProbe: v.optional(v.boolean(), false),
});

const Process = v.object({
  pid: v.pipe(v.number(), v.integer(), v.minValue(1)),
  comm: v.pipe(v.string(), v.maxLength(15)),
  /** Paths as the process sees them: `/dev/dri/card1`, `/dev/vfio/25`. */
  fds: v.array(v.string()),
});

const FixtureSchema = v.object({
  name: Name,
  description: v.string(),
  /** Drivers that are loaded; `vfio-pci` must be listed for detaching to work. */
  drivers: v.record(Name, Driver),
  devices: v.array(Device),
  processes: v.optional(v.array(Process), []),
  mounts: v.optional(
    v.array(v.object({ source: v.string(), mountPoint: v.string(), fsType: Name, dev: v.pipe(v.string(), v.regex(/^\d+:\d+$/)) })),
    [],
  ),
  swaps: v.optional(v.array(v.string()), []),
  consoles: v.optional(v.array(v.object({ name: Name, description: v.string(), bound: v.boolean() })), []),
  /**
   * Firmware frame buffers (platform devices): `efi-framebuffer.0` on
   * `efi-framebuffer`, `simple-framebuffer.0` on `simple-framebuffer`, ...;
   * `bound` false: the device exists without a driver.
   */
  framebuffers: v.optional(
    v.array(
      v.object({ device: Name, driver: v.picklist(['efi-framebuffer', 'simple-framebuffer', 'vesa-framebuffer']), bound: v.boolean() }),
    ),
    [],
  ),
});

export type Fixture = v.InferOutput<typeof FixtureSchema>;
export type FixtureInput = v.InferInput<typeof FixtureSchema>;
export type FixtureDevice = Fixture['devices'][number];

/** Validate a fixture, with every problem named by its path in the document. */
export function parseFixture(input: unknown, source: string): Fixture {
  const result = v.safeParse(FixtureSchema, input);
  if (!result.success) {
    const problems = result.issues.map((i) => `${v.getDotPath(i) ?? '(top)'}: ${i.message}`).join('; ');
    throw new InvalidConfig(`Invalid simulated host ${q(source)}: ${problems}`);
  }
  const fixture = result.output;
  const addresses = new Set<string>();
  for (const d of fixture.devices) {
    if (addresses.has(d.address)) throw new InvalidConfig(`Invalid simulated host ${q(source)}: device ${q(d.address)} appears twice`);
    addresses.add(d.address);
  }
  for (const d of fixture.devices) {
    for (const ref of [d.parent, ...d.consumers]) {
      if (ref !== undefined && !addresses.has(ref)) {
        throw new InvalidConfig(`Invalid simulated host ${q(source)}: ${q(d.address)} names ${q(ref)}, which is not a device of this host`);
      }
    }
    if (d.input.length > 0 && !/^0x0c03/.test(d.class)) {
      throw new InvalidConfig(
        `Invalid simulated host ${q(source)}: ${q(d.address)} has input devices but class ${q(d.class)}; only a USB controller (class 0x0c03xx) carries them`,
      );
    }
    if (d.input.length > 0 && !(d.hostDriver !== undefined ? d.hostDriver : d.driver)) {
      throw new InvalidConfig(
        `Invalid simulated host ${q(source)}: ${q(d.address)} has input devices but no host driver to create them; set 'driver' or 'hostDriver'`,
      );
    }
    for (const driver of [d.driver, d.hostDriver, d.override]) {
      if (driver && !(driver in fixture.drivers)) {
        throw new InvalidConfig(`Invalid simulated host ${q(source)}: ${q(d.address)} uses driver ${q(driver)}, which is not in 'drivers'`);
      }
    }
  }
  return fixture;
}

export async function loadFixtureFile(file: string): Promise<Fixture> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new InvalidConfig(`Cannot read simulated host ${q(file)}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InvalidConfig(`Simulated host ${q(file)} is not valid JSON: ${(error as Error).message}`);
  }
  return parseFixture(json, file);
}
