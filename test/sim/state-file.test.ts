/**
 * The state file (`<run>/vfio-hookd/state.json`): what was detached, for
 * whom, from which driver. It must round-trip, be replaced atomically, and a
 * damaged file must be refused with a sentence naming it, never half-read.
 */
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InvalidConfig } from '../../lib/errors.js';
import type { Claim } from '../../lib/pci/plan.js';
import { StateFile, type ClaimRecord } from '../../lib/state/state-file.js';

async function tempRun(t: ExecutionContext): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vfio-hookd-state-'));
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'run');
}

const GPU_CLAIM: ClaimRecord = {
  owner: 'win10',
  originalDriver: 'amdgpu',
  originalOverride: null,
  group: 25,
  since: '2026-01-02T03:04:05.000Z',
};
const AUDIO_CLAIM: ClaimRecord = {
  owner: 'win10',
  originalDriver: 'snd_hda_intel',
  originalOverride: null,
  group: 25,
  since: '2026-01-02T03:04:05.000Z',
};

test('the state file lives at <run>/vfio-hookd/state.json', (t) => {
  t.is(new StateFile('/some/run').path, path.join('/some/run', 'vfio-hookd', 'state.json'));
});

test('load of a missing state file gives no claims and creates nothing', async (t) => {
  const run = await tempRun(t);
  const claims = await new StateFile(run).load();
  t.is(claims.size, 0);
  t.false(await fs.access(run).then(() => true, () => false), 'loading does not create the run folder');
});

test('save then load round-trips every claim', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  const claims = new Map<string, ClaimRecord>([
    ['0000:0b:00.1', AUDIO_CLAIM],
    ['0000:0b:00.0', GPU_CLAIM],
    ['0000:05:00.0', { owner: 'router', originalDriver: null, originalOverride: 'pci-stub', group: null, since: '2026-02-03T04:05:06.000Z' }],
  ]);
  await state.save(claims);
  const loaded = await new StateFile(run).load();
  t.deepEqual(Object.fromEntries(loaded), Object.fromEntries(claims));

  const json = JSON.parse(await fs.readFile(state.path, 'utf8')) as { version: number; claims: Record<string, unknown> };
  t.is(json.version, 1);
  t.deepEqual(Object.keys(json.claims), ['0000:05:00.0', '0000:0b:00.0', '0000:0b:00.1'], 'claims are written in address order');
  t.is((await fs.stat(state.path)).mode & 0o133, 0, 'neither executable nor writable by others');
});

test('saving an empty map leaves an empty, valid state', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  await state.save(new Map([['0000:0b:00.0', GPU_CLAIM]]));
  await state.save(new Map());
  t.is(await fs.readFile(state.path, 'utf8'), '{\n  "version": 1,\n  "claims": {}\n}\n');
  t.is((await state.load()).size, 0);
});

test('save replaces the file atomically: a new inode renamed over the old, no temp file left behind', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  await state.save(new Map([['0000:0b:00.0', GPU_CLAIM]]));
  const before = await fs.stat(state.path);
  // A reader holding the old file keeps reading the old state: the rename did not rewrite it in place.
  const reader = await fs.open(state.path, 'r');
  t.teardown(() => reader.close());

  await state.save(new Map([['0000:0b:00.1', AUDIO_CLAIM]]));

  const after = await fs.stat(state.path);
  t.not(after.ino, before.ino, 'a new file was renamed over the old one');
  t.deepEqual(await fs.readdir(path.dirname(state.path)), ['state.json']);
  const old = JSON.parse(await reader.readFile('utf8')) as { claims: Record<string, unknown> };
  t.deepEqual(Object.keys(old.claims), ['0000:0b:00.0'], 'the old file is whole, not half-written');
  t.deepEqual([...(await state.load()).keys()], ['0000:0b:00.1']);
});

test('many saves in a row leave only state.json and the last state', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  for (let i = 0; i < 20; i++) {
    await state.save(new Map([['0000:0b:00.0', { ...GPU_CLAIM, owner: `vm${i}` }]]));
  }
  t.deepEqual(await fs.readdir(path.dirname(state.path)), ['state.json']);
  t.is((await state.load()).get('0000:0b:00.0')?.owner, 'vm19');
});

test('saves started together all succeed and leave one whole state, no temp file', async (t) => {
  // The daemon may record two VMs' detaches at once; each save must get its
  // own temp file (a name made of pid and millisecond is not unique then).
  const run = await tempRun(t);
  const state = new StateFile(run);
  const owners = Array.from({ length: 8 }, (_, i) => `vm${i}`);
  const results = await Promise.allSettled(owners.map((owner) => state.save(new Map([['0000:0b:00.0', { ...GPU_CLAIM, owner }]]))));
  t.deepEqual(
    results.map((r) => (r.status === 'rejected' ? String((r.reason as Error).message) : 'saved')),
    owners.map(() => 'saved'),
  );
  t.deepEqual(await fs.readdir(path.dirname(state.path)), ['state.json']);
  const owner = (await state.load()).get('0000:0b:00.0')?.owner;
  t.true(owner !== undefined && owners.includes(owner), `the file holds one of the saved states, got ${String(owner)}`);
});

test('a state file that is not JSON is refused with InvalidConfig naming its path, and left alone', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  await fs.mkdir(path.dirname(state.path), { recursive: true });
  await fs.writeFile(state.path, '{"version": 1, "claims": {');
  const error = await t.throwsAsync(state.load(), { instanceOf: InvalidConfig });
  t.true(error.message.startsWith(`State file '${state.path}' is not valid JSON (`), error.message);
  t.true(
    error.message.endsWith("); check which devices are on vfio-pci with 'vfio-hookctl devices', then remove it"),
    error.message,
  );
  t.is(await fs.readFile(state.path, 'utf8'), '{"version": 1, "claims": {');
});

test('a state file of another version is refused with InvalidConfig naming its path and the field', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  await fs.mkdir(path.dirname(state.path), { recursive: true });
  await fs.writeFile(state.path, JSON.stringify({ version: 2, claims: {} }));
  const error = await t.throwsAsync(state.load(), { instanceOf: InvalidConfig });
  t.regex(error.message, /^State file '.*' is not valid: version: /);
  t.true(error.message.startsWith(`State file '${state.path}' is not valid: version: `));
});

test('a state file with a malformed claim is refused, naming the address and the field', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  await fs.mkdir(path.dirname(state.path), { recursive: true });
  await fs.writeFile(
    state.path,
    JSON.stringify({ version: 1, claims: { '0000:0b:00.0': { ...GPU_CLAIM, owner: '' } } }),
  );
  const error = await t.throwsAsync(state.load(), { instanceOf: InvalidConfig });
  t.is(
    error.message,
    `State file '${state.path}' is not valid: claims.0000:0b:00.0.owner: Invalid length: Expected >=1 but received 0`,
  );
});

test('a state file keyed by something that is not a PCI address is refused', async (t) => {
  const run = await tempRun(t);
  const state = new StateFile(run);
  await fs.mkdir(path.dirname(state.path), { recursive: true });
  await fs.writeFile(state.path, JSON.stringify({ version: 1, claims: { '../../x': GPU_CLAIM } }));
  const error = await t.throwsAsync(state.load(), { instanceOf: InvalidConfig });
  t.is(error.message, `State file '${state.path}' is not valid: claims.../../x: expected a PCI address`);
});

test('withClaims keeps an existing claim of the same owner: the original driver is not overwritten', (t) => {
  const current = new Map<string, ClaimRecord>([['0000:0b:00.0', GPU_CLAIM]]);
  // A second detach for the same VM sees the device already on vfio-pci.
  const added = new Map<string, Claim>([['0000:0b:00.0', { owner: 'win10', originalDriver: 'vfio-pci', originalOverride: 'vfio-pci' }]]);
  const next = StateFile.withClaims(current, added, new Map([['0000:0b:00.0', 25]]), new Date('2026-05-05T00:00:00.000Z'));
  t.deepEqual(next.get('0000:0b:00.0'), GPU_CLAIM);
  t.deepEqual(current.get('0000:0b:00.0'), GPU_CLAIM, 'the current map is not changed');
});

test('withClaims stamps new claims with their group and the time, and keeps unrelated ones', (t) => {
  const current = new Map<string, ClaimRecord>([['0000:0b:00.0', GPU_CLAIM]]);
  const added = new Map<string, Claim>([
    ['0000:05:00.0', { owner: 'router', originalDriver: 'igb', originalOverride: null }],
    ['0000:06:00.1', { owner: 'router', originalDriver: 'xhci_hcd', originalOverride: null }],
  ]);
  const now = new Date('2026-05-05T00:00:00.000Z');
  const next = StateFile.withClaims(current, added, new Map([['0000:05:00.0', 17]]), now);
  t.deepEqual(Object.fromEntries(next), {
    '0000:0b:00.0': GPU_CLAIM,
    '0000:05:00.0': { owner: 'router', originalDriver: 'igb', originalOverride: null, group: 17, since: now.toISOString() },
    '0000:06:00.1': { owner: 'router', originalDriver: 'xhci_hcd', originalOverride: null, group: null, since: now.toISOString() },
  });
});

test('withClaims replaces a claim of another owner with the new one', (t) => {
  const current = new Map<string, ClaimRecord>([['0000:0b:00.0', GPU_CLAIM]]);
  const added = new Map<string, Claim>([['0000:0b:00.0', { owner: 'linux-vm', originalDriver: 'amdgpu', originalOverride: null }]]);
  const now = new Date('2026-05-05T00:00:00.000Z');
  const next = StateFile.withClaims(current, added, new Map([['0000:0b:00.0', 25]]), now);
  t.deepEqual(next.get('0000:0b:00.0'), { owner: 'linux-vm', originalDriver: 'amdgpu', originalOverride: null, group: 25, since: now.toISOString() });
});
