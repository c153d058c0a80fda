/**
 * The state file (`<run>/vfio-hookd/state.json`): claims with typed owners,
 * machine records, the write-ahead record. It must round-trip, be replaced
 * atomically, read version 1 files, and a damaged file must be refused with a
 * sentence that never echoes its content, then set aside on request.
 */
import { tempDir } from '../helpers/temp-dir.js';
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DamagedState } from '../../lib/errors.js';
import { EMPTY_STATE, StateFile, type ClaimRecord, type State } from '../../lib/state/state-file.js';
import { manualOwner, vmOwner } from '../../lib/pci/owner.js';

async function tempRun(t: ExecutionContext): Promise<string> {
  const dir = await tempDir(t, 'vfio-hookd-state-');
  return path.join(dir, 'run');
}

const SINCE = '2026-01-02T03:04:05.000Z';
const GPU_CLAIM: ClaimRecord = {
  owner: vmOwner('win10'),
  originalDriver: 'amdgpu',
  originalOverride: null,
  originalKnown: true,
  group: 25,
  since: SINCE,
};
const AUDIO_CLAIM: ClaimRecord = { ...GPU_CLAIM, originalDriver: 'snd_hda_intel' };

function stateWith(claims: [string, ClaimRecord][]): State {
  return { ...EMPTY_STATE, claims: new Map(claims) };
}

async function writeRaw(state: StateFile, text: string): Promise<void> {
  await fs.mkdir(path.dirname(state.path), { recursive: true });
  await fs.writeFile(state.path, text);
}

test('the state file lives at <run>/vfio-hookd/state.json', (t) => {
  t.is(new StateFile('/some/run').path, path.join('/some/run', 'vfio-hookd', 'state.json'));
});

test('load of a missing state file gives an empty state and creates nothing', async (t) => {
  const run = await tempRun(t);
  const state = await new StateFile(run).load();
  t.is(state.claims.size, 0);
  t.is(state.pending, null);
  t.false(
    await fs.access(run).then(
      () => true,
      () => false,
    ),
    'loading does not create the run folder',
  );
});

test('save then load round-trips claims, machine records and the write-ahead record', async (t) => {
  const run = await tempRun(t);
  const file = new StateFile(run);
  const state: State = {
    claims: new Map<string, ClaimRecord>([
      ['0000:0b:00.1', AUDIO_CLAIM],
      ['0000:0b:00.0', GPU_CLAIM],
      [
        '0000:05:00.0',
        { owner: manualOwner('alex'), originalDriver: null, originalOverride: 'pci-stub', originalKnown: true, group: null, since: SINCE },
      ],
      [
        '0000:06:00.0',
        { owner: { kind: 'unknown' }, originalDriver: null, originalOverride: null, originalKnown: false, group: 7, since: SINCE },
      ],
    ]),
    machines: new Map([
      [
        'win10',
        {
          stage: 'prepared',
          devices: ['0000:0b:00.0'],
          user: 'alex',
          units: ['looking-glass-client@looking-glass.service'],
          removeShmOnStop: true,
          shm: [
            {
              name: 'looking-glass',
              path: '/dev/shm/looking-glass',
              sizeBytes: 33554432,
              uid: 1000,
              gid: 301,
              mode: 0o660,
              action: 'created',
            },
          ],
          since: SINCE,
        },
      ],
    ]),
    pending: {
      kind: 'detach',
      owner: vmOwner('win10'),
      devices: [{ address: '0000:0b:00.0', driver: 'amdgpu', override: null, group: 25 }],
      since: SINCE,
    },
  };
  await file.save(state);
  const loaded = await new StateFile(run).load();
  t.deepEqual(Object.fromEntries(loaded.claims), Object.fromEntries(state.claims));
  t.deepEqual(Object.fromEntries(loaded.machines), Object.fromEntries(state.machines));
  t.deepEqual(loaded.pending, state.pending);

  const json = JSON.parse(await fs.readFile(file.path, 'utf8')) as { version: number; claims: Record<string, unknown> };
  t.is(json.version, 2);
  t.deepEqual(
    Object.keys(json.claims),
    ['0000:05:00.0', '0000:06:00.0', '0000:0b:00.0', '0000:0b:00.1'],
    'claims are written in address order',
  );
  t.is((await fs.stat(file.path)).mode & 0o133, 0, 'neither executable nor writable by others');
});

test('a version 1 file is read: owners become typed, manual detaches are told from VMs', async (t) => {
  const run = await tempRun(t);
  const file = new StateFile(run);
  const old = (owner: string, originalDriver: string | null) => ({
    owner,
    originalDriver,
    originalOverride: null,
    group: 25,
    since: SINCE,
  });
  await writeRaw(
    file,
    JSON.stringify({
      version: 1,
      claims: {
        '0000:0b:00.0': old('win10', 'amdgpu'),
        '0000:0c:00.0': old('dbus', 'igb'),
        '0000:0d:00.0': old('vfio-hookctl', 'vfio-pci'),
      },
    }),
  );
  const loaded = await file.load();
  t.deepEqual(loaded.claims.get('0000:0b:00.0'), { ...old('win10', 'amdgpu'), owner: vmOwner('win10'), originalKnown: true });
  t.deepEqual(loaded.claims.get('0000:0c:00.0')?.owner, manualOwner('root'));
  t.deepEqual(loaded.claims.get('0000:0d:00.0')?.owner, manualOwner('root'));
  t.false(loaded.claims.get('0000:0d:00.0')!.originalKnown, "'vfio-pci' as the original in a version 1 file was a guess: unknown");
});

test('save replaces the file atomically: a new inode renamed over the old, no temp file left behind', async (t) => {
  const run = await tempRun(t);
  const file = new StateFile(run);
  await file.save(stateWith([['0000:0b:00.0', GPU_CLAIM]]));
  const before = await fs.stat(file.path);
  const reader = await fs.open(file.path, 'r');
  t.teardown(() => reader.close());
  await file.save(stateWith([['0000:0b:00.1', AUDIO_CLAIM]]));
  const after = await fs.stat(file.path);
  t.not(after.ino, before.ino, 'a new file was renamed over the old one');
  t.deepEqual(await fs.readdir(path.dirname(file.path)), ['state.json']);
  const old = JSON.parse(await reader.readFile('utf8')) as { claims: Record<string, unknown> };
  t.deepEqual(Object.keys(old.claims), ['0000:0b:00.0'], 'the old file is whole, not half-written');
  t.deepEqual([...(await file.load()).claims.keys()], ['0000:0b:00.1']);
});

test('saves started together all succeed and leave one whole state, no temp file', async (t) => {
  const run = await tempRun(t);
  const file = new StateFile(run);
  const names = Array.from({ length: 8 }, (_, i) => `vm${i}`);
  const results = await Promise.allSettled(names.map((n) => file.save(stateWith([['0000:0b:00.0', { ...GPU_CLAIM, owner: vmOwner(n) }]]))));
  t.deepEqual(
    results.map((r) => r.status),
    names.map(() => 'fulfilled'),
  );
  t.deepEqual(await fs.readdir(path.dirname(file.path)), ['state.json']);
  const owner = (await file.load()).claims.get('0000:0b:00.0')?.owner;
  t.true(owner?.kind === 'vm' && names.includes(owner.name));
});

/** Every kind of damage the daemon must survive, and what the refusal says (never the content). */
const DAMAGED: { name: string; make: (file: StateFile) => Promise<void>; says: RegExp }[] = [
  { name: 'empty', make: (f) => writeRaw(f, ''), says: /is empty$/ },
  {
    name: 'truncated',
    make: (f) => writeRaw(f, '{"version": 2, "claims": {"0000:0b:00.0": {"own'),
    says: /is not valid JSON \(truncated or overwritten\)$/,
  },
  { name: 'not JSON', make: (f) => writeRaw(f, 'Call failed: org.freedesktop.DBus.Error.ServiceUnknown\n'), says: /is not valid JSON/ },
  {
    name: 'a future version',
    make: (f) => writeRaw(f, JSON.stringify({ version: 9, claims: {} })),
    says: /is version 9, newer than this vfio-hookd \(2\) understands$/,
  },
  {
    name: 'a symlink',
    make: async (f) => {
      await fs.mkdir(path.dirname(f.path), { recursive: true });
      await fs.symlink('/etc/passwd', f.path);
    },
    says: /is a symbolic link$/,
  },
  { name: 'a directory', make: (f) => fs.mkdir(f.path, { recursive: true }).then(() => undefined), says: /is not a regular file$/ },
  {
    name: 'a claim with a bad owner',
    make: (f) => writeRaw(f, JSON.stringify({ version: 2, claims: { '0000:0b:00.0': { ...GPU_CLAIM, owner: { kind: 'root!!' } } } })),
    says: /is not valid: unexpected values at 'claims\.0000:0b:00\.0\.owner\.kind'$/,
  },
  {
    name: 'a key that is not a PCI address',
    make: (f) => writeRaw(f, JSON.stringify({ version: 2, claims: { '../../x': GPU_CLAIM } })),
    says: /is not valid: unexpected values at 'claims\.\.\.\/\.\.\/x'$/,
  },
];

for (const damage of DAMAGED) {
  test(`a state file that is ${damage.name} is refused as DamagedState without its content, then set aside`, async (t) => {
    const run = await tempRun(t);
    const file = new StateFile(run);
    await damage.make(file);
    const error = await t.throwsAsync(file.load(), { instanceOf: DamagedState });
    t.true(error.message.startsWith(`State file '${file.path}'`), error.message);
    t.regex(error.message, damage.says);
    t.false(error.message.includes('ServiceUnknown'), 'the file is never echoed');

    const { state, damaged } = await file.loadOrSetAside(new Date('2026-12-02T10:00:00.000Z'));
    t.is(state.claims.size, 0);
    t.true((damaged ?? '').startsWith(`${error.message}; moved aside to `), damaged ?? '');
    const aside = `${file.path}.damaged-2026-12-02T10-00-00-000Z`;
    t.true(
      await fs.lstat(aside).then(
        () => true,
        () => false,
      ),
      'the damaged file is kept for a post-mortem',
    );
    t.false(
      await fs.lstat(file.path).then(
        () => true,
        () => false,
      ),
      'and no longer in the way',
    );
    await file.save(stateWith([['0000:0b:00.0', GPU_CLAIM]]));
    t.is((await file.load()).claims.size, 1, 'a new state can be saved afterwards');
  });
}
