/**
 * Generated hook inputs (argv and domain XML) with the answer each must get,
 * known by construction: every case is built as valid or as broken in one
 * named way. Deterministic from a seed (mulberry32), so a failure is
 * replayed by its seed and index.
 *
 * The oracle, daemon running (configuration: MANAGED_NAMES, each with a
 * Looking Glass size that contradicts the 32M of win10.xml):
 * - refused (exit 1, the daemon's one line): a name libvirt would not make
 *   ('/', a control character, empty, over 251 bytes), an operation or
 *   sub-operation libvirt does not send, an extra argument with a control
 *   character or over 4096 characters; and, at
 *   `prepare begin` (the one stage that reads the XML: the others act on the
 *   record prepare made, so a release is never refused for its XML), XML
 *   that is not UTF-8, XML
 *   that is not a valid domain of that name (not XML,
 *   truncated, another root, no or two <name>, another name, a DOCTYPE, an
 *   unknown entity, nesting over 256, a bad hostdev, shmem, uuid or
 *   metadata); and a managed VM's prepare (its sizes disagree);
 * - let through (exit 0, at most one note line): everything else, that is a
 *   VM the daemon does not manage with valid input, and every stage that
 *   does not act.
 * Daemon down: exit 1 exactly for prepare/start of XML holding `<hostdev` or
 * `<shmem` (the hook's own rule), else 0; always one line. The same holds,
 * daemon running, for arguments busctl cannot send: sd-bus refuses the
 * Unicode noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF), so the call
 * never leaves the hook (libvirt cannot make such a name either: XML 1.0
 * excludes U+FFFE and U+FFFF).
 * A VM owed nothing (hooks/qemu owed_nothing: plain arguments, an XML that
 * names it and mentions no hostdev, shmem or our namespace, a name not
 * configured) is answered by the hook itself: exit 0 whatever else its
 * document holds.
 * Cases that would make the daemon really act (a managed VM's valid
 * started/stopped/release/reconnect) are not generated: their answer
 * depends on what came before, not on the input.
 */
import { OPERATIONS, SUB_OPERATIONS } from '../../lib/lifecycle/hook-event.js';

/** mulberry32: small, fast, and the same on every machine. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let z = this.#state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 2 ** 32;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/**
 * VM names libvirt accepts (no '/', no newline) that a careless hook would
 * take for busctl options or for bus errors, or that a shell would act on.
 */
export const HOSTILE_NAMES: readonly string[] = [
  '-h',
  '--help',
  '--version',
  '--address=unix:abstract=vfio-hookd-nonexistent',
  '--system',
  '-',
  '--',
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
  'Failed to connect to bus: No such file or directory',
  'The name org.vfiohookd1 was not provided by any .service files',
  'Unit vfio-hookd.service not found',
  'Connection refused',
  'Call failed: vfio-hookd: fine',
  'Call failed:',
  'vfio-hookd: ',
  'Spiel-PC \u00fc \u{1f5a5} \u65e5\u672c\u8a9e',
  '\u0645\u0631\u062d\u0628\u0627 \u202e\u202d',
  `it's a "quoted" VM`,
  ' spaces  around ',
  'back\\slash \\n \\c',
  '%s %n %d',
  '$(touch x) `id` ; | & * ~root',
  '<hostdev> & <shmem>',
];

/** Managed in the fuzz configuration (with sizes that win10.xml contradicts). */
export const MANAGED_NAMES: readonly string[] = [
  'win10',
  '-h',
  '--version',
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'Call failed: vfio-hookd: fine',
];

/** The configuration that manages MANAGED_NAMES. JSON string escapes are TOML basic-string escapes. */
export function managedConfig(names: readonly string[] = MANAGED_NAMES): string {
  return names
    .map((name) => {
      const key = JSON.stringify(name);
      return `[vm.${key}]\nuser = "1000"\n[vm.${key}.looking-glass]\nsize = "64M"\ngroup = "64055"\n`;
    })
    .join('\n');
}

const ACTING = ['prepare begin', 'started begin', 'stopped end', 'release end', 'reconnect begin'];
const BUS_ERRORS = [
  'Failed to connect to bus',
  'Call failed:',
  'vfio-hookd: ',
  'ServiceUnknown',
  'NameHasNoOwner',
  'was not provided by any .service files',
  'Connection refused',
  'not activatable',
  'Connection timed out',
  'org.freedesktop.DBus.Error.NoReply',
];
const UNICODE = [
  '\u00fc',
  '\u00e9',
  '\u00df',
  '\u03a9',
  '\u65e5',
  '\u672c',
  '\u{1f5a5}',
  '\u{1f600}',
  '\u202e',
  '\u00a0',
  '\u2028',
  '\u0301',
  '\ufeff',
  '\uffff',
  '\ufdd0',
];
const CONTROLS = ['\n', '\t', '\r', '\u0001', '\u001b', '\u007f', '\u0085', '\u009b'];

export function escapeXml(text: string): string {
  return text.replace(/[&<>'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function ascii(rng: Rng, min: number, max: number, avoid = '/'): string {
  let s = '';
  const n = rng.range(min, max);
  while (s.length < n) {
    const c = String.fromCharCode(rng.range(0x20, 0x7e));
    if (!avoid.includes(c)) s += c;
  }
  return s;
}

function unicode(rng: Rng, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += rng.chance(0.5) ? rng.pick(UNICODE) : ascii(rng, 1, 1);
  return s;
}

function bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** A name libvirt accepts: not empty, no '/', no control character, at most 251 bytes. */
function validName(rng: Rng): string {
  let name: string;
  switch (rng.int(6)) {
    case 0:
      name = rng.pick(HOSTILE_NAMES);
      break;
    case 1:
      name = ascii(rng, 1, 40);
      break;
    case 2:
      name = unicode(rng, rng.range(1, 20));
      break;
    case 3:
      name = `${rng.pick(['-', '--'])}${ascii(rng, 0, 12, '/ ')}${rng.chance(0.3) ? `=${ascii(rng, 0, 8)}` : ''}`;
      break;
    case 4:
      name = `${rng.chance(0.5) ? ascii(rng, 0, 5) : ''}${rng.pick(BUS_ERRORS)}${rng.chance(0.5) ? ascii(rng, 0, 10) : ''}`;
      break;
    default:
      name = rng.chance(0.5) ? 'x'.repeat(rng.range(200, 251)) : '\u00fc'.repeat(rng.range(100, 125));
  }
  return bytes(name) <= 251 && name !== '' ? name : 'fallback';
}

/** A name libvirt would not make, and why. */
function invalidName(rng: Rng): string {
  const base = validName(rng).slice(0, 60) || 'x';
  const at = rng.int(base.length + 1);
  switch (rng.int(4)) {
    case 0:
      return `${base.slice(0, at)}/${base.slice(at)}`;
    case 1:
      return `${base.slice(0, at)}${rng.pick(CONTROLS)}${base.slice(at)}`;
    case 2:
      return '';
    default:
      return rng.chance(0.5) ? 'a'.repeat(rng.range(252, 10_000)) : '\u{1f5a5}'.repeat(rng.range(63, 2500));
  }
}

function invalidOperation(rng: Rng): string {
  for (;;) {
    const op = rng.pick([
      '',
      '-h',
      '--help',
      '--version',
      'PREPARE',
      'prepare ',
      ' start',
      'prepare\n',
      'explode',
      'Call failed: vfio-hookd: x',
      ascii(rng, 1, 12),
    ]);
    if (!(OPERATIONS as readonly string[]).includes(op)) return op;
  }
}

function invalidSubOperation(rng: Rng): string {
  for (;;) {
    const sub = rng.pick(['', 'BEGIN', 'begin\n', 'start', '--', '-h', 'end ', ascii(rng, 1, 8)]);
    if (!(SUB_OPERATIONS as readonly string[]).includes(sub)) return sub;
  }
}

interface DomainParts {
  readonly name: string | null;
  readonly hostdevs: number;
  readonly shmems: readonly { name: string; size: string }[];
  readonly noise: boolean;
  /** Extra text inside <devices>, raw. */
  readonly devicesExtra?: string;
  /** Extra text right after <name>, raw. */
  readonly headExtra?: string;
  readonly root?: string;
}

/** A domain document; ends exactly with its closing root tag (so every strict prefix is malformed). */
function domainXml(rng: Rng, parts: DomainParts): string {
  const root = parts.root ?? 'domain';
  const out: string[] = [];
  if (parts.noise && rng.chance(0.3)) out.push("<?xml version='1.0' encoding='UTF-8'?>\n");
  out.push(`<${root} type='kvm'${rng.chance(0.3) ? ` id='${rng.int(100)}'` : ''}>\n`);
  if (parts.name !== null) out.push(`  <name>${escapeXml(parts.name)}</name>\n`);
  if (parts.headExtra !== undefined) out.push(parts.headExtra);
  if (rng.chance(0.5)) out.push('  <uuid>5f3a2b1c-9d8e-4f7a-8b6c-1d2e3f4a5b6c</uuid>\n');
  if (parts.noise) {
    out.push(`  <title>${escapeXml(unicode(rng, rng.range(0, 30)))}</title>\n`);
    out.push(
      `  <description>${escapeXml(unicode(rng, rng.range(0, 60)))} &amp; &lt;tag&gt; &#x1F5A5; <![CDATA[<hostdev-like> & raw]]></description>\n`,
    );
    if (rng.chance(0.5)) out.push(`  <!-- ${ascii(rng, 0, 30, '-')} -->\n`);
    if (rng.chance(0.3)) out.push("  <metadata><x:thing xmlns:x='urn:example:other'><x:v a='1'/></x:thing></metadata>\n");
    if (rng.chance(0.2)) out.push('  <?pi some instruction?>\n');
  }
  out.push("  <memory unit='KiB'>1048576</memory>\n  <devices>\n");
  for (let i = 0; i < parts.hostdevs; i++) {
    const managed = rng.pick(["managed='no' ", "managed='yes' ", '']);
    out.push(
      `    <hostdev mode='subsystem' type='pci' ${managed}><source><address domain='0x0000' bus='0x${rng.int(256).toString(16).padStart(2, '0')}' slot='0x${rng.int(32).toString(16).padStart(2, '0')}' function='0x${rng.int(8)}'/></source></hostdev>\n`,
    );
  }
  for (const s of parts.shmems)
    out.push(`    <shmem name='${s.name}'><model type='ivshmem-plain'/><size unit='M'>${s.size}</size></shmem>\n`);
  if (parts.noise && rng.chance(0.5))
    out.push("    <disk type='file' device='disk'><source file='/var/lib/libvirt/images/a.qcow2'/><target dev='vda'/></disk>\n");
  if (parts.noise && rng.chance(0.2))
    out.push("    <interface type='hostdev'><source><address type='pci' domain='0' bus='3' slot='0' function='1'/></source></interface>\n");
  if (parts.devicesExtra !== undefined) out.push(parts.devicesExtra);
  out.push(`  </devices>\n</${root}>`);
  return out.join('');
}

function randomShmems(rng: Rng): { name: string; size: string }[] {
  const all = [
    { name: 'looking-glass', size: rng.pick(['32', '64', '128']) },
    { name: 'scream', size: '2' },
  ];
  return all.filter(() => rng.chance(0.4));
}

function validXml(rng: Rng, name: string): string {
  const xml = domainXml(rng, { name, hostdevs: rng.chance(0.4) ? rng.range(1, 3) : 0, shmems: randomShmems(rng), noise: rng.chance(0.6) });
  // Now and then a large one: over 256 KiB, parsed on a worker thread.
  if (rng.chance(0.01)) {
    const disk = "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/big.qcow2'/><target dev='vdb'/></disk>\n";
    return xml.replace('  <devices>\n', `  <devices>\n${disk.repeat(rng.range(3000, 6000))}`);
  }
  return xml;
}

/** XML that is not a valid domain named `name`, broken in one named way. */
function brokenXml(rng: Rng, name: string): { xml: string; why: string } {
  const base = (extra: Partial<DomainParts> = {}): string =>
    domainXml(rng, { name, hostdevs: rng.int(3), shmems: randomShmems(rng), noise: rng.chance(0.5), ...extra });
  switch (rng.int(16)) {
    case 0: {
      let other = validName(rng);
      if (other === name) other = `${name}-other`;
      return { xml: base({ name: other }), why: 'another <name>' };
    }
    case 1:
      return { xml: base({ name: null }), why: 'no <name>' };
    case 2:
      return { xml: base({ headExtra: `  <name>${escapeXml(name)}</name>\n` }), why: 'two <name>' };
    case 3:
      return { xml: base({ root: rng.pick(['network', 'Domain', 'domainx', 'pool']) }), why: 'another root' };
    case 4: {
      const full = base();
      return { xml: full.slice(0, rng.int(full.length)), why: 'truncated' };
    }
    case 5:
      return { xml: `<!DOCTYPE domain [<!ENTITY x "${'y'.repeat(10)}">]>\n${base()}`, why: 'DOCTYPE' };
    case 6:
      return { xml: base({ headExtra: '  <description>&nope;</description>\n' }), why: 'unknown entity' };
    case 7: {
      const depth = rng.range(257, 400);
      return { xml: base({ devicesExtra: `${'<a>'.repeat(depth)}${'</a>'.repeat(depth)}\n` }), why: 'nesting over 256' };
    }
    case 8: {
      const bad = rng.pick([
        "<hostdev mode='subsystem' type='pci' managed='no'><source><address domain='0x0000' bus='0xzz' slot='0x00' function='0x0'/></source></hostdev>",
        "<hostdev mode='subsystem' type='pci'><source><address bus='0x0b' slot='0x00' function='0x8'/></source></hostdev>",
        "<hostdev mode='subsystem' type='pci' managed='maybe'><source><address bus='0x0b' slot='0x00' function='0x0'/></source></hostdev>",
        "<hostdev mode='subsystem' type='pci'><source/></hostdev>",
        "<hostdev mode='subsystem' type='pci'><source><address bus='0x0b' function='0x0'/></source></hostdev>",
      ]);
      return { xml: base({ devicesExtra: `    ${bad}\n` }), why: 'bad hostdev' };
    }
    case 9: {
      const bad = rng.pick([
        "<shmem name='lg'><size unit='Q'>32</size></shmem>",
        "<shmem name='lg'><model type='bogus'/></shmem>",
        "<shmem name='lg' role='boss'/>",
        "<shmem name='a/b'/>",
        '<shmem/>',
        "<shmem name='lg'><size unit='M'>lots</size></shmem>",
      ]);
      return { xml: base({ devicesExtra: `    ${bad}\n` }), why: 'bad shmem' };
    }
    case 10:
      return { xml: base({ headExtra: '  <uuid>not-a-uuid</uuid>\n' }).replace(/ {2}<uuid>5f3a[^<]*<\/uuid>\n/, ''), why: 'bad uuid' };
    case 11:
      return {
        xml: base({
          headExtra: "  <metadata><v:vm xmlns:v='https://vfio-hookd.org/xmlns/vm/1'><v:force>maybe</v:force></v:vm></metadata>\n",
        }),
        why: 'bad vfio-hookd metadata',
      };
    case 12:
      return { xml: base().replace('</devices>', '</devices>\n  <devices/>'), why: 'two <devices>' };
    case 13:
      return { xml: '', why: 'empty' };
    case 14:
      // Never starts with '<domain', so never a domain.
      return {
        xml: `${rng.pick(['', ' ', 'x', '{'])}${unicode(rng, rng.range(0, 200))}${rng.chance(0.3) ? '\u0000' : ''}`,
        why: 'not XML',
      };
    default:
      return { xml: `${base()}${rng.pick(['<extra/>', 'trailing text', '</domain>'])}`, why: 'content after the root' };
  }
}

export interface FuzzCase {
  readonly index: number;
  readonly args: [string, string, string, string];
  /** Bytes for XML that is not UTF-8. */
  readonly xml: string | Buffer;
  /** Daemon running: refused (exit 1) or let through (exit 0). */
  readonly refused: boolean;
  /** Daemon down: exit 1 (fail closed) or 0. */
  readonly closedWhenDown: boolean;
  /** An argument busctl cannot send (a noncharacter): no judgement even with the daemon running. */
  readonly unsendable: boolean;
  /** Why the expectation is what it is, for the failure message. */
  readonly why: string;
}

/** `count` cases from `seed`. */
export function fuzzCases(seed: number, count: number): FuzzCase[] {
  const rng = new Rng(seed);
  const cases: FuzzCase[] = [];
  while (cases.length < count) {
    const c = fuzzCase(rng, cases.length);
    if (c !== null) cases.push(c);
  }
  return cases;
}

function fuzzCase(rng: Rng, index: number): FuzzCase | null {
  const why: string[] = [];
  let refused = false;

  // The name.
  const nameKind = rng.next();
  let name: string;
  let managed = false;
  if (nameKind < 0.15) {
    name = invalidName(rng);
    refused = true;
    why.push('invalid name');
  } else if (nameKind < 0.3) {
    name = rng.pick(MANAGED_NAMES);
    managed = true;
  } else {
    name = validName(rng);
    managed = MANAGED_NAMES.includes(name);
  }

  // The operation.
  let operation: string;
  let subOperation: string;
  const opKind = rng.next();
  if (opKind < 0.6) {
    [operation, subOperation] = rng.pick(ACTING).split(' ') as [string, string];
  } else if (opKind < 0.75) {
    operation = rng.pick(OPERATIONS);
    subOperation = rng.pick(SUB_OPERATIONS);
  } else {
    operation = rng.chance(0.6) ? invalidOperation(rng) : rng.pick(OPERATIONS);
    subOperation =
      operation !== '' && (OPERATIONS as readonly string[]).includes(operation)
        ? invalidSubOperation(rng)
        : rng.chance(0.5)
          ? invalidSubOperation(rng)
          : rng.pick(SUB_OPERATIONS);
    refused = true;
    why.push('invalid operation or sub-operation');
  }
  const acting = ACTING.includes(`${operation} ${subOperation}`);

  // The extra argument.
  let extra = '-';
  const extraKind = rng.next();
  if (extraKind < 0.08) {
    extra = rng.chance(0.7) ? ascii(rng, 0, 60) : 'e'.repeat(4096);
  } else if (extraKind < 0.12) {
    extra = rng.chance(0.5) ? `x${rng.pick(CONTROLS.filter((c) => c < '\u0020'))}y` : 'e'.repeat(rng.range(4097, 6000));
    refused = true;
    why.push('invalid extra');
  }

  // The XML.
  let xml: string | Buffer;
  const xmlKind = rng.next();
  if (xmlKind < 0.05) {
    const text = validXml(rng, name);
    const at = rng.int(text.length + 1);
    xml = Buffer.concat([
      Buffer.from(text.slice(0, at)),
      Buffer.from(rng.pick([[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xfe, 0xff]])),
      Buffer.from(text.slice(at)),
    ]);
    // Only prepare sends the XML to the daemon (the later stages act on the record).
    if (operation === 'prepare') {
      refused = true;
      why.push('XML not UTF-8');
    } else why.push('XML not UTF-8, but only prepare sends it');
  } else if (managed && operation === 'prepare' && subOperation === 'begin' && !refused && xmlKind < 0.6) {
    // A managed VM's real prepare: its Looking Glass size (32M here) disagrees with the configuration (64M).
    xml = domainXml(rng, { name, hostdevs: rng.int(3), shmems: [{ name: 'looking-glass', size: '32' }], noise: rng.chance(0.5) });
    refused = true;
    why.push('managed VM, sizes disagree');
  } else if (xmlKind < 0.55) {
    xml = validXml(rng, name);
    if (managed && acting && !refused) return null; // its answer would depend on what came before
  } else {
    const broken = brokenXml(rng, name);
    xml = broken.xml;
    if (operation === 'prepare' && subOperation === 'begin') {
      refused = true;
      why.push(`XML: ${broken.why}`);
    } else if (!refused) {
      why.push(`XML ${broken.why}, but only prepare reads the XML`);
    }
  }

  const text = typeof xml === 'string' ? xml : xml.toString('latin1');
  // $(cat) in the hook drops NUL bytes; the hook's rule sees what is left.
  const seen = text.replaceAll('\u0000', '');
  const closedWhenDown = (operation === 'prepare' || operation === 'start') && (seen.includes('<hostdev') || seen.includes('<shmem'));
  const args: [string, string, string, string] = [name, operation, subOperation, extra];
  if (!managed && owedNothing(args, seen)) {
    // hooks/qemu owed_nothing(): answered by the hook itself, the daemon never asked (lib/daemon/owed-index.ts).
    refused = false;
    why.push('a VM owed nothing: answered by the hook without a call');
  }
  if (!refused)
    why.push(managed ? 'managed VM, a stage that does not act' : acting ? 'valid input of a VM not managed' : 'a stage that does not act');
  const unsendable = args.some(hasNoncharacter);
  if (unsendable) why.push('an argument busctl cannot send');
  return { index, args, xml, refused, closedWhenDown, unsendable, why: why.join('; ') };
}

/** The hook's rule for answering without a call (hooks/qemu, owed_nothing), for a name not in the daemon's index. */
function owedNothing([name, operation, subOperation, extra]: readonly string[], xml: string): boolean {
  return (
    /^[A-Za-z0-9_][A-Za-z0-9._+-]*$/.test(name!) &&
    name!.length <= 251 &&
    (OPERATIONS as readonly string[]).includes(operation!) &&
    (SUB_OPERATIONS as readonly string[]).includes(subOperation!) &&
    /^[\x20-\x7e]*$/.test(extra!) &&
    extra!.length <= 4096 &&
    xml.length <= 16 * 2 ** 20 &&
    !/hostdev|shmem|vfio-hookd\.org\/xmlns/.test(xml) &&
    xml.includes(`<name>${name}</name>`)
  );
}

/** A Unicode noncharacter, which sd-bus refuses in a string (systemd's unichar_is_valid). */
export function hasNoncharacter(text: string): boolean {
  for (const c of text) {
    const cp = c.codePointAt(0)!;
    if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return true;
  }
  return false;
}
