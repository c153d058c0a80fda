/**
 * vfio-hookd settings carried in a domain's own XML, under `<metadata>` in
 * the project's namespace, as an alternative (or a complement) to a
 * `[vm.NAME]` table in /etc/vfio-hookd/vfio-hookd.toml:
 *
 * ```xml
 * <metadata>
 *   <vfio:vm xmlns:vfio="https://vfio-hookd.org/xmlns/vm/1">
 *     <vfio:device address="0000:0b:00.0"/>            <!-- devices = [...], repeatable -->
 *     <vfio:user>alex</vfio:user>                        <!-- user -->
 *     <vfio:force>no</vfio:force>                        <!-- force, 'yes' or 'no' -->
 *     <vfio:remove-shm-on-stop>yes</vfio:remove-shm-on-stop>
 *     <vfio:looking-glass resolution="2560x1440" group="qemu-libvirtd" mode="0660"/>
 *     <vfio:scream size="2M" group="qemu-libvirtd" mode="0660"/>
 *     <vfio:unit>looking-glass-client@looking-glass.service</vfio:unit>  <!-- units = [...], repeatable -->
 *   </vfio:vm>
 * </metadata>
 * ```
 *
 * `<vfio:looking-glass>` takes the attributes `resolution`, `size`, `hdr`
 * ('yes'/'no'), `name`, `group`, `mode`; `<vfio:scream>` takes `size`, `name`,
 * `group`, `mode`:
 * the keys of the TOML tables of the same names. Every key means exactly what
 * it means in the configuration file and is validated by the same schema
 * (lib/config), so this module only maps the XML shape onto that of a TOML
 * table; values stay strings.
 *
 * Elements are matched by namespace URI, never by prefix: libvirt keeps the
 * prefix the user chose (`virsh metadata --key`), so `<hookd:vm
 * xmlns:hookd="...">` or a default namespace work the same. Anything unknown
 * in our namespace is an error, since a typo silently ignored would be a
 * setting silently lost.
 */

import { InvalidConfig, q } from '../errors.js';
import { didYouMean } from '../names/did-you-mean.js';
import type { XmlElement } from './xml-tree.js';

/** The XML namespace of vfio-hookd's domain metadata. Version 1; a new shape gets a new URI. */
export const VFIO_XMLNS = 'https://vfio-hookd.org/xmlns/vm/1';

/** `<vfio:looking-glass>` attributes, as the TOML table `[vm.NAME.looking-glass]` would have them. */
interface LookingGlassInput {
  readonly resolution?: string;
  readonly size?: string;
  readonly hdr?: boolean;
  readonly name?: string;
  readonly group?: string;
  readonly mode?: string;
}

/** `<vfio:scream>` attributes, as the TOML table `[vm.NAME.scream]` would have them. */
interface ScreamInput {
  readonly size?: string;
  readonly name?: string;
  readonly group?: string;
  readonly mode?: string;
}

/**
 * One VM's settings as the metadata gives them, not yet validated: the same
 * keys and value types as a `[vm.NAME]` table of the configuration file.
 */
export interface VmSettingsInput {
  readonly devices?: readonly string[];
  readonly user?: string;
  readonly force?: boolean;
  readonly 'remove-shm-on-stop'?: boolean;
  readonly 'looking-glass'?: LookingGlassInput;
  readonly scream?: ScreamInput;
  readonly units?: readonly string[];
}

type Kind = 'attributes' | 'text' | 'boolean';

/** Each element our namespace knows, what it carries, and whether it may repeat. */
const ELEMENTS: Readonly<Record<string, { kind: Kind; attributes?: readonly string[]; repeat?: boolean }>> = {
  device: { kind: 'attributes', attributes: ['address'], repeat: true },
  user: { kind: 'text' },
  force: { kind: 'boolean' },
  'remove-shm-on-stop': { kind: 'boolean' },
  'looking-glass': { kind: 'attributes', attributes: ['resolution', 'size', 'hdr', 'name', 'group', 'mode'] },
  scream: { kind: 'attributes', attributes: ['size', 'name', 'group', 'mode'] },
  unit: { kind: 'text', repeat: true },
};

function isOurs(element: XmlElement): boolean {
  return element.namespace === VFIO_XMLNS;
}

function tag(element: XmlElement): string {
  return `<${element.name}>`;
}

/**
 * Read vfio-hookd's settings from a domain's `<metadata>` element.
 *
 * @param metadata the `<metadata>` element, or `null` when the domain has none.
 * @param vmName the domain's name, for messages.
 * @returns the settings, or `null` when there is no `<vm>` element in our namespace.
 * @throws InvalidConfig for more than one `<vm>`, unknown elements or
 *   attributes, repeated single elements, stray text, or a boolean other than
 *   'yes'/'no'.
 */
export function parseVmMetadata(metadata: XmlElement | null, vmName: string): VmSettingsInput | null {
  if (metadata === null) return null;
  const fail = (message: string): never => {
    throw new InvalidConfig(`Invalid vfio-hookd metadata in VM ${q(vmName)}: ${message}`);
  };

  const ours = metadata.children.filter(isOurs);
  for (const element of ours) {
    if (element.localName !== 'vm') {
      fail(`unknown element ${tag(element)} in namespace '${VFIO_XMLNS}'; the settings go in one <vm> element`);
    }
  }
  if (ours.length === 0) return null;
  if (ours.length > 1) fail(`${ours.length} <vm> elements in namespace '${VFIO_XMLNS}'; keep one`);
  const vm = ours[0]!;

  checkAttributes(vm, [], fail);
  if (vm.text.trim() !== '') fail(`unexpected text ${q(vm.text.trim())} in ${tag(vm)}`);

  const prefix = vm.name.includes(':') ? vm.name.slice(0, vm.name.indexOf(':') + 1) : '';
  const seen = new Set<string>();
  const devices: string[] = [];
  const units: string[] = [];
  const settings: Record<string, unknown> = {};

  for (const child of vm.children) {
    const spec = isOurs(child) ? ELEMENTS[child.localName] : undefined;
    if (spec === undefined) {
      const hint = isOurs(child) ? didYouMean(child.localName, Object.keys(ELEMENTS), (s) => `<${prefix}${s}>`) : '';
      const ns = child.namespace === null ? 'no namespace' : `namespace ${q(child.namespace)}`;
      return fail(`unknown element ${tag(child)} (${ns}) in ${tag(vm)}${hint}`);
    }
    if (!spec.repeat && seen.has(child.localName)) fail(`${tag(child)} appears more than once; keep one`);
    seen.add(child.localName);
    if (child.children.length > 0) fail(`${tag(child)} must not contain elements, found ${tag(child.children[0]!)}`);

    if (spec.kind === 'attributes') {
      checkAttributes(child, spec.attributes ?? [], fail);
      if (child.text.trim() !== '') fail(`unexpected text ${q(child.text.trim())} in ${tag(child)}; use attributes`);
    } else {
      checkAttributes(child, [], fail);
    }

    switch (child.localName) {
      case 'device': {
        const address = child.attributes.get('address');
        if (address === undefined) fail(`${tag(child)} needs an 'address' attribute, e.g. address='0000:0b:00.0'`);
        devices.push(address!);
        break;
      }
      case 'unit':
        units.push(child.text.trim());
        break;
      case 'looking-glass':
      case 'scream': {
        const table: Record<string, unknown> = {};
        for (const [attr, value] of child.attributes) {
          if (attr === 'xmlns' || attr.startsWith('xmlns:')) continue;
          table[attr] = attr === 'hdr' ? yesNo(child, attr, value, fail) : value;
        }
        settings[child.localName] = table;
        break;
      }
      default:
        settings[child.localName] = spec.kind === 'boolean' ? yesNo(child, null, child.text.trim(), fail) : child.text.trim();
    }
  }
  if (devices.length > 0) settings['devices'] = devices;
  if (units.length > 0) settings['units'] = units;
  return settings as VmSettingsInput;
}

function checkAttributes(element: XmlElement, allowed: readonly string[], fail: (message: string) => never): void {
  for (const attr of element.attributes.keys()) {
    if (attr === 'xmlns' || attr.startsWith('xmlns:')) continue;
    if (!allowed.includes(attr)) {
      const hint = allowed.length === 0 ? '' : didYouMean(attr, allowed);
      const takes = allowed.length === 0 ? 'takes no attributes' : `takes ${allowed.map((a) => q(a)).join(', ')}`;
      fail(`unknown attribute ${q(attr)} on ${tag(element)}, which ${takes}${hint}`);
    }
  }
}

/** libvirt's boolean spelling, 'yes' or 'no'. */
function yesNo(element: XmlElement, attr: string | null, value: string, fail: (message: string) => never): boolean {
  if (value === 'yes') return true;
  if (value === 'no') return false;
  const where = attr === null ? tag(element) : `${q(attr)} on ${tag(element)}`;
  return fail(`invalid value ${q(value)} for ${where}: expected 'yes' or 'no'`);
}
