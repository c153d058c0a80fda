/**
 * Journal against a real AF_UNIX datagram socket of the test's own standing
 * in for /run/systemd/journal/socket, with JOURNAL_STREAM made from the
 * device and inode of a real temp file whose descriptor plays stderr. Checks
 * the exact native-protocol bytes, the stderr fallback and its format, field
 * name handling, truncation, and the MESSAGE_ID table.
 */
import fs from 'node:fs';
import { join } from 'node:path';

import { tempDir } from '../helpers/temp-dir.js';
import { DatagramReceiver } from '../helpers/datagram.js';
import test, { type ExecutionContext } from 'ava';

import { InvalidArgs } from '../../lib/errors.js';
import { DatagramError, Journal, MessageId, type JournalOptions } from '../../lib/systemd/index.js';

interface Receiver {
  path: string;
  messages: Buffer[];
  waitFor(count: number, timeoutMs?: number): Promise<Buffer[]>;
}

/** A datagram socket bound at `dir/name`, closed in teardown. */
async function receiver(t: ExecutionContext, dir: string, name = 'journal.sock'): Promise<Receiver> {
  const rx = await DatagramReceiver.open(t, join(dir, name));
  return { path: rx.path, messages: rx.datagrams, waitFor: (count, timeoutMs) => rx.waitForCount(count, timeoutMs) };
}

interface Setup {
  dir: string;
  rx: Receiver;
  /** A descriptor of a real file, standing in for stderr. */
  fd: number;
  /** `DEVICE:INODE` of that file. */
  stream: string;
  /** What the journal wrote to its injected stderr. */
  stderr: string[];
  errors: Error[];
  journal(options?: JournalOptions): Journal;
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const dir = await tempDir(t, 'vfio-hookd-journal-');
  const rx = await receiver(t, dir);
  const fd = fs.openSync(join(dir, 'stderr'), 'w');
  t.teardown(() => fs.closeSync(fd));
  const st = fs.fstatSync(fd, { bigint: true });
  const stream = `${st.dev}:${st.ino}`;
  const stderr: string[] = [];
  const errors: Error[] = [];
  const journal = (options: JournalOptions = {}) =>
    new Journal({
      env: { JOURNAL_STREAM: stream },
      stderrFd: fd,
      socketPath: rx.path,
      write: (text) => stderr.push(text),
      onError: (e) => errors.push(e),
      ...options,
    });
  return { dir, rx, fd, stream, stderr, errors, journal };
}

/** `KEY\n<u64 le length>value\n`: journald's form for a value with a newline. */
function binaryField(name: string, value: string): Buffer {
  const data = Buffer.from(value, 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(data.length));
  return Buffer.concat([Buffer.from(`${name}\n`), length, data, Buffer.from('\n')]);
}

/** Split a native-protocol datagram back into [name, value] pairs. */
function decode(data: Buffer): Array<[string, string]> {
  const fields: Array<[string, string]> = [];
  let at = 0;
  while (at < data.length) {
    const nl = data.indexOf(0x0a, at);
    const eq = data.indexOf(0x3d, at);
    if (eq !== -1 && eq < nl) {
      fields.push([data.subarray(at, eq).toString(), data.subarray(eq + 1, nl).toString()]);
      at = nl + 1;
    } else {
      const name = data.subarray(at, nl).toString();
      const length = Number(data.readBigUInt64LE(nl + 1));
      fields.push([name, data.subarray(nl + 9, nl + 9 + length).toString()]);
      at = nl + 9 + length + 1;
    }
  }
  return fields;
}

// --- native protocol ---

test('sends an entry with own fields to the journal socket, byte for byte', async (t) => {
  const s = await setup(t);
  const journal = s.journal();
  t.is(journal.target, 'journal');

  journal.notice("Detached '0000:0b:00.0' from 'amdgpu' to 'vfio-pci'", {
    MESSAGE_ID: MessageId.DEVICE_DETACHED,
    VFIO_DOMAIN: 'win10',
    PCI_ADDRESS: '0000:0b:00.0',
    IOMMU_GROUP: 25,
    HOLDERS: 'Xorg (pid 1234)\nkwin_wayland (pid 1301)',
  });

  const [datagram] = await s.rx.waitFor(1);
  const expected = Buffer.concat([
    Buffer.from(
      "MESSAGE=Detached '0000:0b:00.0' from 'amdgpu' to 'vfio-pci'\n" +
        'PRIORITY=5\n' +
        'SYSLOG_IDENTIFIER=vfio-hookd\n' +
        'MESSAGE_ID=ce36bd27e095466893c6c5c1d213d083\n' +
        'VFIO_DOMAIN=win10\n' +
        'PCI_ADDRESS=0000:0b:00.0\n' +
        'IOMMU_GROUP=25\n',
    ),
    binaryField('HOLDERS', 'Xorg (pid 1234)\nkwin_wayland (pid 1301)'),
  ]);
  t.deepEqual(datagram, expected);
  t.deepEqual(s.stderr, []);
  t.deepEqual(s.errors, []);
});

test('a multi-line MESSAGE uses the binary form, with its exact length', async (t) => {
  const s = await setup(t);
  s.journal().error("Cannot parse '/etc/vfio-hookd/vfio-hookd.toml':\nline 3, column 9: expected '='", { UNIT: 'vfio-hookd.service' });
  const [datagram] = await s.rx.waitFor(1);
  const message = "Cannot parse '/etc/vfio-hookd/vfio-hookd.toml':\nline 3, column 9: expected '='";
  t.deepEqual(
    datagram,
    Buffer.concat([binaryField('MESSAGE', message), Buffer.from('PRIORITY=3\nSYSLOG_IDENTIFIER=vfio-hookd\nUNIT=vfio-hookd.service\n')]),
  );
  t.is(datagram?.readBigUInt64LE('MESSAGE\n'.length), BigInt(Buffer.byteLength(message)));
});

test('writes numbers, bigints and booleans in text, skips null and undefined, and keeps UTF-8', async (t) => {
  const s = await setup(t);
  s.journal().info('Größe geprüft', {
    SIZE_BYTES: 33554432,
    SIZE_LIMIT: 2n ** 64n - 1n,
    REPAIRED: false,
    FORCED: true,
    SHM_PATH: null,
    UNIT: undefined,
  });
  const [datagram] = await s.rx.waitFor(1);
  t.deepEqual(
    datagram,
    Buffer.from(
      'MESSAGE=Größe geprüft\nPRIORITY=6\nSYSLOG_IDENTIFIER=vfio-hookd\nSIZE_BYTES=33554432\nSIZE_LIMIT=18446744073709551615\nREPAIRED=false\nFORCED=true\n',
      'utf8',
    ),
  );
});

test('SYSLOG_IDENTIFIER comes from the options and may be overridden per entry', async (t) => {
  const s = await setup(t);
  const journal = s.journal({ identifier: 'vfio-hookd-agent' });
  journal.info('one');
  journal.info('two', { SYSLOG_IDENTIFIER: 'vfio-hookctl', CODE_FILE: 'lib/pci/engine.ts', CODE_FUNC: 'detach' });
  const [first, second] = await s.rx.waitFor(2);
  t.is(first?.toString(), 'MESSAGE=one\nPRIORITY=6\nSYSLOG_IDENTIFIER=vfio-hookd-agent\n');
  t.is(second?.toString(), 'MESSAGE=two\nPRIORITY=6\nSYSLOG_IDENTIFIER=vfio-hookctl\nCODE_FILE=lib/pci/engine.ts\nCODE_FUNC=detach\n');
});

test('drops fields with invalid names, keeps the rest, and reports each name once', async (t) => {
  const s = await setup(t);
  const journal = s.journal();
  const long = 'A'.repeat(65);
  const fields = {
    VFIO_DOMAIN: 'win10',
    vfio_domain: 'lowercase',
    _PID: '1',
    '1ST': 'digit first',
    'PCI-ADDRESS': 'dash',
    [long]: 'too long',
    ['B'.repeat(64)]: 'exactly 64',
    '': 'empty',
    MESSAGE: 'override',
    PRIORITY: 0,
  };
  journal.warning('Field names', fields);
  journal.warning('Field names again', fields);

  const [first, second] = await s.rx.waitFor(2);
  t.deepEqual(decode(first ?? Buffer.alloc(0)), [
    ['MESSAGE', 'Field names'],
    ['PRIORITY', '4'],
    ['SYSLOG_IDENTIFIER', 'vfio-hookd'],
    ['VFIO_DOMAIN', 'win10'],
    ['B'.repeat(64), 'exactly 64'],
  ]);
  t.is(decode(second ?? Buffer.alloc(0))[0]?.[1], 'Field names again');

  const rule = "use A-Z, 0-9 and '_', not starting with '_' or a digit, at most 64 characters, ignoring";
  t.true(s.errors.every((e) => e instanceof InvalidArgs));
  t.deepEqual(
    s.errors.map((e) => e.message),
    [
      `Invalid journal field name 'vfio_domain': ${rule}`,
      `Invalid journal field name '_PID': ${rule}`,
      `Invalid journal field name '1ST': ${rule}`,
      `Invalid journal field name 'PCI-ADDRESS': ${rule}`,
      `Invalid journal field name '${long}': ${rule}`,
      `Invalid journal field name '': ${rule}`,
      "Invalid journal field name 'MESSAGE': it is set from the arguments of log(), ignoring",
      "Invalid journal field name 'PRIORITY': it is set from the arguments of log(), ignoring",
    ],
  );
});

test('an entry over the size limit has its longest value cut at a character boundary, with a note', async (t) => {
  const s = await setup(t);
  const message = `Holders: ${'é'.repeat(3000)}`; // 6009 bytes
  s.journal({ maxEntryBytes: 2048 }).error(message, { PCI_ADDRESS: '0000:0b:00.0' });

  const [datagram] = await s.rx.waitFor(1);
  t.true((datagram?.length ?? Infinity) <= 2048, `${datagram?.length} bytes`);
  const fields = decode(datagram ?? Buffer.alloc(0));
  t.deepEqual(fields.slice(1), [
    ['PRIORITY', '3'],
    ['SYSLOG_IDENTIFIER', 'vfio-hookd'],
    ['PCI_ADDRESS', '0000:0b:00.0'],
  ]);
  const cut = fields[0]?.[1] ?? '';
  const match = /^(Holders: é+) \[([0-9]+) bytes truncated\]$/.exec(cut);
  t.truthy(match, cut.slice(-60));
  t.false(cut.includes('\ufffd'), 'no character split in two');
  t.is(Buffer.byteLength(match?.[1] ?? '') + Number(match?.[2]), Buffer.byteLength(message));
  t.deepEqual(s.stderr, []);
});

test('an entry at the default limit of 48 KiB is sent whole', async (t) => {
  const s = await setup(t);
  const fixed = 'MESSAGE=\nPRIORITY=6\nSYSLOG_IDENTIFIER=vfio-hookd\n'.length;
  const message = 'x'.repeat(48 * 1024 - fixed);
  s.journal().info(message);
  const [datagram] = await s.rx.waitFor(1);
  t.is(datagram?.length, 48 * 1024);
  t.is(decode(datagram ?? Buffer.alloc(0))[0]?.[1], message);
});

test('when the journal socket is missing, entries go to stderr and the failure is reported once', async (t) => {
  const s = await setup(t);
  const socketPath = join(s.dir, 'no-journald.sock');
  const journal = s.journal({ socketPath });
  t.is(journal.target, 'journal');
  journal.error("Cannot detach '0000:0b:00.0'", { PCI_ADDRESS: '0000:0b:00.0' });
  journal.info('Still here');

  t.deepEqual(s.stderr, ["<3>Cannot detach '0000:0b:00.0' [PCI_ADDRESS=0000:0b:00.0]\n", '<6>Still here\n']);
  t.is(s.errors.length, 1);
  t.true(s.errors[0] instanceof DatagramError);
  t.is((s.errors[0] as DatagramError).code, 'ENOENT');
  t.is(
    s.errors[0]?.message,
    `Cannot send a journal entry to '${socketPath}': no such file or directory (ENOENT), writing it to stderr instead`,
  );
});

// --- stderr ---

test('without JOURNAL_STREAM, entries are <N>-prefixed lines on stderr with own fields after the message', async (t) => {
  const s = await setup(t);
  const journal = s.journal({
    env: {},
    send: () => t.fail('nothing may be sent to the journal socket'),
  });
  t.is(journal.target, 'stderr');

  journal.error("Cannot detach '0000:0b:00.0': held by 'Xorg' (pid 1234)", {
    MESSAGE_ID: MessageId.HOOK_REFUSED,
    VFIO_DOMAIN: 'win10',
    PCI_ADDRESS: '0000:0b:00.0',
    CODE_FUNC: 'detach',
    SHM_PATH: '/dev/shm/looking glass',
    UNIT: null,
  });
  journal.notice('Ready');

  t.deepEqual(s.stderr, [
    "<3>Cannot detach '0000:0b:00.0': held by 'Xorg' (pid 1234) [VFIO_DOMAIN=win10 PCI_ADDRESS=0000:0b:00.0 SHM_PATH='/dev/shm/looking glass']\n",
    '<5>Ready\n',
  ]);
  t.deepEqual(s.errors, []);
});

test('a JOURNAL_STREAM that is not our stderr, or is malformed, means stderr', async (t) => {
  const s = await setup(t);
  const st = fs.fstatSync(s.fd, { bigint: true });
  for (const stream of [`${st.dev}:${st.ino + 1n}`, `${st.dev + 1n}:${st.ino}`, `${st.ino}`, `${st.dev}:${st.ino}:0`, 'x:y', '']) {
    const journal = s.journal({ env: { JOURNAL_STREAM: stream }, send: () => t.fail(`sent with JOURNAL_STREAM '${stream}'`) });
    t.is(journal.target, 'stderr', stream);
    journal.warning('Not ours');
  }
  t.is(s.stderr.length, 6);
  t.true(s.stderr.every((line) => line === '<4>Not ours\n'));
  // The same stream on a closed descriptor: fstat fails, so stderr.
  const closed = fs.openSync(join(s.dir, 'closed'), 'w');
  const cst = fs.fstatSync(closed, { bigint: true });
  fs.closeSync(closed);
  t.is(s.journal({ env: { JOURNAL_STREAM: `${cst.dev}:${cst.ino}` }, stderrFd: closed }).target, 'stderr');
});

test('a multi-line message gets the prefix on every line; a TTY gets no prefix', async (t) => {
  const s = await setup(t);
  s.journal({ env: {} }).error('Rollback failed:\nstep 2 of 3', { VFIO_DOMAIN: 'win10' });
  s.journal({ env: {}, isTTY: true }).error('Rollback failed:\nstep 2 of 3', { VFIO_DOMAIN: 'win10', NOTE: "it's\nodd" });
  t.deepEqual(s.stderr, [
    '<3>Rollback failed:\n<3>step 2 of 3 [VFIO_DOMAIN=win10]\n',
    "Rollback failed:\nstep 2 of 3 [VFIO_DOMAIN=win10 NOTE='it's\\x0aodd']\n",
  ]);
});

test('debug entries are dropped unless maxPriority lets them through', async (t) => {
  const s = await setup(t);
  s.journal().debug('hidden');
  s.journal({ maxPriority: 7 }).debug('shown');
  s.journal({ maxPriority: 3 }).warning('hidden too');
  const [datagram] = await s.rx.waitFor(1);
  t.is(datagram?.toString(), 'MESSAGE=shown\nPRIORITY=7\nSYSLOG_IDENTIFIER=vfio-hookd\n');
  t.is(s.rx.messages.length, 1);
});

test('refuses a priority outside 0..7 and bad options', async (t) => {
  const s = await setup(t);
  const journal = s.journal();
  const error = t.throws(() => journal.log(8 as 7, 'x'), { instanceOf: InvalidArgs });
  t.is(error?.message, "Invalid log priority '8': use 0 to 7, refusing");
  t.throws(() => s.journal({ maxPriority: -1 as 0 }), {
    instanceOf: InvalidArgs,
    message: "Invalid log priority '-1': use 0 to 7, refusing",
  });
  t.throws(() => s.journal({ maxEntryBytes: 512 }), {
    instanceOf: InvalidArgs,
    message: "Invalid journal entry size limit '512': use at least 1024 bytes, refusing",
  });
});

test('a failing stderr writer or onError does not escape', async (t) => {
  const s = await setup(t);
  const journal = s.journal({
    env: {},
    write: () => {
      throw new Error('EPIPE');
    },
    onError: () => {
      throw new Error('logger down');
    },
  });
  t.notThrows(() => journal.error('x', { bad_name: 1 }));
});

// --- MESSAGE_IDs ---

test('MESSAGE_IDs are 32 lowercase hex characters and all different', (t) => {
  const ids = Object.values(MessageId);
  t.deepEqual(Object.keys(MessageId).sort(), [
    'BOOT_HOLD_FAILED',
    'DEVICE_DETACHED',
    'DEVICE_REATTACHED',
    'GONE_RELEASED',
    'HOOK_NOT_RECEIVED',
    'HOOK_REFUSED',
    'MANUAL_CHANGE',
    'ROLLBACK_DONE',
    'SHM_FILE_CREATED',
    'SHM_FILE_REPAIRED',
    'STALE_RELEASED',
    'STATE_RECOVERED',
    'UNIT_FAILED',
  ]);
  for (const id of ids) t.regex(id, /^[0-9a-f]{32}$/);
  t.is(new Set(ids).size, ids.length);
});
