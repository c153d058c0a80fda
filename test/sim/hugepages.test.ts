/**
 * Hugepages against the simulated pool (lib/sim/sim-hugepages.ts), which
 * answers an nr_hugepages write as the kernel does: with what it can give.
 * The real kernel's answer is the kernel tier's (test/kernel/guest/hugepages.sh).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

import test from 'ava';

import { HostDependency, InvalidConfig } from '../../lib/errors.js';
import { parseHugepages, planHugepages, undoHugepages } from '../../lib/host/hugepages.js';
import { rootsUnder } from '../../lib/roots.js';
import { SimHugepages, type SimHugepagesOptions } from '../../lib/sim/sim-hugepages.js';
import { tempDir } from '../helpers/temp-dir.js';

async function host(t: Parameters<typeof tempDir>[0], options: SimHugepagesOptions = {}) {
  const roots = rootsUnder(await tempDir(t));
  const files = await SimHugepages.create(roots, options);
  return { roots, files, context: { roots, systemd: null } };
}

const parsed: [string, string | undefined, number, number][] = [
  ['8G', '2M', 2048, 4096],
  ['128M', undefined, 2048, 64],
  ['2G', '1G', 1048576, 2],
];
for (const [total, pageSize, pageKiB, pages] of parsed) {
  test(`parses hugepages '${total}' of '${pageSize ?? '(default)'}' as ${pages} pages of ${pageKiB} KiB`, (t) => {
    t.deepEqual(parseHugepages({ total, ...(pageSize ? { pageSize } : {}) }), { pageKiB, pages });
  });
}

test('refuses a total that is not a whole number of pages', (t) => {
  t.throws(() => parseHugepages({ total: '3M', pageSize: '2M' }), {
    instanceOf: InvalidConfig,
    message: "Invalid hugepages '3M': not a whole number of 2M pages; use a multiple of 2M (the domain's <memory>), refusing",
  });
});

test('refuses a page size that is not a power of two, and a bad size', (t) => {
  t.throws(() => parseHugepages({ total: '6M', pageSize: '3M' }), {
    instanceOf: InvalidConfig,
    message: /^Invalid hugepage-size '3M': a page size is a power of two/,
  });
  t.throws(() => parseHugepages({ total: 'lots' }), { instanceOf: InvalidConfig, message: /^Invalid hugepages: Invalid size 'lots'/ });
});

test('refuses a page size the kernel does not offer, changing nothing', async (t) => {
  const { files, context } = await host(t, { nr: 3 });
  await t.throwsAsync(planHugepages({ total: '2G', pageSize: '1G' }, context, { files }), {
    instanceOf: InvalidConfig,
    message: /^Invalid hugepage-size '1G': this kernel has no 1G hugepages \('.*hugepages-1048576kB' is missing\)/,
  });
  t.deepEqual(files.writes, []);
});

test('reserves the pages after compacting memory, and gives back only its own at undo', async (t) => {
  const { files, context } = await host(t, { nr: 10, used: 4 });
  const change = await planHugepages({ total: '128M', pageSize: '2M' }, context, { files });
  t.deepEqual(change.record, { kind: 'hugepages', pageKiB: 2048, pages: 64, before: 10 });
  t.is(change.phase, 'before-detach');
  t.is(change.describe, 'reserve 64 2 MiB pages (nr_hugepages 10 -> 74)');
  t.deepEqual(files.writes, [], 'plan writes nothing');
  await change.apply();
  t.deepEqual(files.writes, ['vm/compact_memory=1', 'hugepages-2048kB/nr_hugepages=74']);
  t.is(await files.nr(), 74);
  await undoHugepages(change.record, context, { files });
  t.is(await files.nr(), 10);
  await undoHugepages(change.record, context, { files });
  t.is(await files.nr(), 10, 'a second undo changes nothing');
});

test('a short reservation is refused with the numbers and the count put back', async (t) => {
  const { files, context } = await host(t, { nr: 0, capacity: 300 });
  const change = await planHugepages({ total: '1G' }, context, { files });
  const error = await t.throwsAsync(change.apply(), { instanceOf: HostDependency });
  t.is(
    error?.message,
    'Cannot reserve hugepages: asked for 512 2 MiB pages, the kernel gave 300 (nr_hugepages 0 -> 300, 300 free, put back to 0): ' +
      'memory is fragmented or too little is free; free memory, reserve them at boot (hugepages=512 on the kernel command line) or lower hugepages, refusing',
  );
  t.is(await files.nr(), 0, 'the old count is back');
  await undoHugepages(change.record, context, { files });
  t.is(await files.nr(), 0, 'undo after the failure leaves it there');
});

test('undo keeps what another VM reserved after this one', async (t) => {
  const { files, context } = await host(t, { nr: 0 });
  const a = await planHugepages({ total: '64M' }, context, { files });
  await a.apply();
  const b = await planHugepages({ total: '32M' }, context, { files });
  await b.apply();
  t.is(await files.nr(), 48);
  await undoHugepages(b.record, context, { files });
  t.is(await files.nr(), 32, "the first VM's 32 pages stay");
  await undoHugepages(a.record, context, { files });
  t.is(await files.nr(), 0);
});

test("released out of order, the later VM's floor keeps the earlier one's pages (never below its record's before)", async (t) => {
  const { files, context } = await host(t, { nr: 0 });
  const a = await planHugepages({ total: '64M' }, context, { files });
  await a.apply();
  const b = await planHugepages({ total: '32M' }, context, { files });
  await b.apply();
  await undoHugepages(a.record, context, { files });
  t.is(await files.nr(), 16, "the second VM's 16 pages stay");
  await undoHugepages(b.record, context, { files });
  t.is(await files.nr(), 32, 'its before (32) is the floor: those pages are not taken, and stay reserved');
});

test('undo of a change never applied leaves the pool as it is', async (t) => {
  const { files, context } = await host(t, { nr: 7 });
  const change = await planHugepages({ total: '64M' }, context, { files });
  await undoHugepages(change.record, context, { files });
  t.is(await files.nr(), 7);
  t.deepEqual(files.writes, []);
});

test('pages still mapped at undo stay as surplus until unmapped', async (t) => {
  const { files, context } = await host(t, { nr: 0 });
  const change = await planHugepages({ total: '64M' }, context, { files });
  await change.apply();
  await files.use(32);
  await undoHugepages(change.record, context, { files });
  const surplus = async () => (await fs.readFile(path.join(files.poolDir, 'surplus_hugepages'), 'utf8')).trim();
  t.is(await files.nr(), 0, 'the persistent pool is back to 0');
  t.is(await surplus(), '32', 'the mapped ones are surplus now');
  await files.use(-32);
  t.is(await surplus(), '0', 'and gone once unmapped');
});

test('skips compaction where the kernel has none', async (t) => {
  const { files, context } = await host(t, { compaction: false });
  const change = await planHugepages({ total: '4M' }, context, { files });
  await change.apply();
  t.deepEqual(files.writes, ['hugepages-2048kB/nr_hugepages=2']);
});
