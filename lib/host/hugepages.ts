/**
 * Hugepages for a VM, reserved at prepare and given back at release.
 *
 * Reserving at boot (`hugepages=N`) takes the memory from the host for good;
 * reserving at VM start is what the field does instead, and it fails when
 * memory is fragmented: the kernel then gives fewer pages than asked, and
 * QEMU dies later with a vague "cannot allocate memory". Here the kernel's
 * answer is read back, and a short one is refused with the numbers, the old
 * count put back.
 *
 * Files (Documentation/admin-guide/mm/hugetlbpage.rst):
 * `<sysfs>/kernel/mm/hugepages/hugepages-<N>kB/{nr_hugepages,free_hugepages,surplus_hugepages}`
 * and `<proc>/sys/vm/compact_memory` (written first so that the kernel has
 * contiguous blocks to give; absent without CONFIG_COMPACTION, then skipped).
 * The per-node files (`<sysfs>/devices/system/node/nodeN/hugepages/`) are not
 * used: a global write spreads the pages over the nodes, which is right for a
 * VM that is not pinned to one node; per-node reservation is not done.
 */
import * as v from 'valibot';

import { HostDependency, InvalidConfig, q } from '../errors.js';
import { checkedRecord } from './host-change.js';
import { under } from '../roots.js';
import { formatSize, parseSize } from '../shm/size.js';
import type { HostChange, HostChangeRecord, HostContext } from './host-change.js';
import { REAL_TUNABLES, type TunableFiles } from './tunable-files.js';

const KiB = 1024;

/** The record kind (lib/host/undo.ts finds the undo by it). */
export const HUGEPAGES_KIND = 'hugepages';

export interface HugepagesSettings {
  /** How much memory the VM backs with hugepages (`hugepages = "8G"`): its `<memory>` when the domain has `<memoryBacking><hugepages/>`. */
  readonly total: string;
  /** The page size (`hugepage-size = "2M"`, or `"1G"`). Default `"2M"`, the x86 default size. */
  readonly pageSize?: string;
}

/** What the VM asks for, in pages of one size. */
export interface HugepagesRequest {
  readonly pageKiB: number;
  readonly pages: number;
}

export interface HugepagesRecord extends HugepagesRequest, HostChangeRecord {
  readonly kind: 'hugepages';
  /** `nr_hugepages` before the change. */
  readonly before: number;
  /**
   * Of `before`, the pages that were the host's own (a boot reservation,
   * one by hand): `before` less what other VMs of this daemon had reserved
   * then. Absent in records from before it was kept: undo then never goes
   * below `before`.
   */
  readonly hostFloor?: number;
}

export interface HugepagesOptions {
  /** Default: the files themselves (REAL_TUNABLES). */
  readonly files?: TunableFiles;
}

const COUNT = v.pipe(v.number(), v.safeInteger(), v.minValue(0));
/** What undo trusts of a record read back from state.json. */
const RECORD_SCHEMA = v.object({
  kind: v.literal('hugepages'),
  pageKiB: v.pipe(
    COUNT,
    v.check((n) => n >= 4 && (n & (n - 1)) === 0),
  ),
  pages: COUNT,
  before: COUNT,
  hostFloor: v.optional(COUNT),
});

/**
 * `total` and `pageSize` to a count of pages.
 *
 * @throws InvalidConfig when a size does not parse, the page size is not a
 *   power of two of at least 4K, or the total is not a whole number of pages.
 */
export function parseHugepages(settings: HugepagesSettings): HugepagesRequest {
  let total: number;
  let page: number;
  try {
    total = parseSize(settings.total);
  } catch (error) {
    throw new InvalidConfig(`Invalid hugepages: ${(error as Error).message}`);
  }
  try {
    page = parseSize(settings.pageSize ?? '2M');
  } catch (error) {
    throw new InvalidConfig(`Invalid hugepage-size: ${(error as Error).message}`);
  }
  if (page < 4 * KiB || (page & (page - 1)) !== 0) {
    throw new InvalidConfig(`Invalid hugepage-size ${q(settings.pageSize)}: a page size is a power of two such as '2M' or '1G', refusing`);
  }
  if (total % page !== 0) {
    throw new InvalidConfig(
      `Invalid hugepages ${q(settings.total)}: not a whole number of ${formatSize(page)} pages; ` +
        `use a multiple of ${formatSize(page)} (the domain's <memory>), refusing`,
    );
  }
  return { pageKiB: page / KiB, pages: total / page };
}

function poolDir(sysfs: string, pageKiB: number): string {
  return under(sysfs, 'kernel', 'mm', 'hugepages', `hugepages-${pageKiB}kB`);
}

function describePages(pages: number, pageKiB: number): string {
  return `${pages} ${formatSize(pageKiB * KiB).replace(/([KMG])$/, ' $1iB')} page${pages === 1 ? '' : 's'}`;
}

async function readCount(files: TunableFiles, path: string): Promise<number> {
  const text = await files.read(path);
  const n = text === null ? NaN : Number(text.trim());
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new HostDependency(
      `Cannot read hugepages from ${q(path)}: it reads ${q(text)}, not a count; is hugetlbfs in this kernel?, refusing`,
    );
  }
  return n;
}

/**
 * Plan the reservation: check that the kernel has pages of that size and
 * record today's count. Nothing is changed.
 *
 * @throws InvalidConfig for a bad setting or a page size this kernel does not offer.
 */
export async function planHugepages(
  settings: HugepagesSettings,
  context: HostContext,
  options: HugepagesOptions = {},
): Promise<HostChange<HugepagesRecord>> {
  const files = options.files ?? REAL_TUNABLES;
  const { pageKiB, pages } = parseHugepages(settings);
  const dir = poolDir(context.roots.sysfs, pageKiB);
  if ((await files.read(under(dir, 'nr_hugepages'))) === null) {
    throw new InvalidConfig(
      `Invalid hugepage-size ${q(settings.pageSize ?? '2M')}: this kernel has no ${formatSize(pageKiB * KiB)} hugepages (${q(dir)} is missing); ` +
        `use a size listed under ${q(under(context.roots.sysfs, 'kernel', 'mm', 'hugepages'))}, refusing`,
    );
  }
  const before = await readCount(files, under(dir, 'nr_hugepages'));
  const others = context.hugepagesHeldByOthers?.(pageKiB);
  const record: HugepagesRecord = {
    kind: 'hugepages',
    pageKiB,
    pages,
    before,
    ...(others === undefined ? {} : { hostFloor: Math.max(before - others, 0) }),
  };
  return {
    record,
    describe: `reserve ${describePages(pages, pageKiB)} (nr_hugepages ${before} -> ${before + pages})`,
    phase: 'before-detach',
    apply: () => reserve(files, context, record),
  };
}

async function reserve(files: TunableFiles, context: HostContext, record: HugepagesRecord): Promise<void> {
  const dir = poolDir(context.roots.sysfs, record.pageKiB);
  const nr = under(dir, 'nr_hugepages');
  const compact = under(context.roots.proc, 'sys', 'vm', 'compact_memory');
  // Compaction first: a fragmented host has the memory but not in whole pages.
  if (await files.exists(compact)) await files.write(compact, '1\n');
  // From the count now, not the one planned: another VM may have reserved in between.
  const now = await readCount(files, nr);
  const want = now + record.pages;
  await files.write(nr, `${want}\n`);
  const got = await readCount(files, nr);
  if (got < want) {
    const free = await readCount(files, under(dir, 'free_hugepages')).catch(() => NaN);
    // Give back what was taken: the caller's undo would do it too, but a short reservation must not linger.
    await files.write(nr, `${now}\n`);
    throw new HostDependency(
      `Cannot reserve hugepages: asked for ${describePages(record.pages, record.pageKiB)}, the kernel gave ${got - now} ` +
        `(nr_hugepages ${now} -> ${got}${Number.isNaN(free) ? '' : `, ${free} free`}, put back to ${now}): memory is fragmented or too little is free; ` +
        `free memory, reserve them at boot (hugepages=${want} on the kernel command line) or lower hugepages, refusing`,
    );
  }
}

/**
 * Give the VM's pages back: nr_hugepages becomes `now - pages`, never below
 * a floor of pages that are not this VM's to give.
 *
 * Why not simply `before`: another VM may have reserved its own pages since
 * (now = before + ours + theirs); writing `before` would take theirs. The
 * floor is the host's own pages (the record's `hostFloor`: a boot
 * reservation, pages reserved by hand) plus what the other VMs' records hold
 * now (`HostContext.hugepagesHeldByOthers`), so VMs may be released in any
 * order: A then B prepared, A released first gives back A's pages, B's
 * release then B's, down to the host's own. Without both (a record from an
 * older vfio-hookd, a caller that cannot tell), the floor is `before`, which
 * never takes a page that was there before this VM, at the cost of leaving
 * a VM's pages reserved when the VM prepared before it is released first.
 * Pages still mapped are not a reason to stop: the kernel keeps mapped ones
 * as surplus (`surplus_hugepages`) and frees each as it is unmapped, so the
 * count reaches the target once QEMU is gone. Undo runs once per release:
 * the record is dropped with the release (a second undo of the same record
 * would give back `pages` again, down to the floor).
 */
export async function undoHugepages(record: HostChangeRecord, context: HostContext, options: HugepagesOptions = {}): Promise<void> {
  const r = checkedRecord(
    RECORD_SCHEMA,
    record,
    'nr_hugepages: write the count you want to /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages',
  );
  const files = options.files ?? REAL_TUNABLES;
  const nr = under(poolDir(context.roots.sysfs, r.pageKiB), 'nr_hugepages');
  const now = await readCount(files, nr);
  const others = context.hugepagesHeldByOthers?.(r.pageKiB);
  const floor = r.hostFloor !== undefined && others !== undefined ? r.hostFloor + others : r.before;
  const target = Math.max(floor, now - r.pages);
  if (target !== now) await files.write(nr, `${target}\n`);
}
