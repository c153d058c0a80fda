/**
 * What vfio-hookd has detached, for whom, from which driver: the memory that
 * lets `reattach` give each device back to the driver it had, and that
 * survives a restart of the daemon or a second CLI call.
 *
 * Kept in `<run>/vfio-hookd/state.json`, written atomically: a temp file in
 * the same folder, fsync, rename over the old one, fsync the folder. A reader
 * sees the old state or the new one, never half of either.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import { InvalidConfig, q } from '../errors.js';
import { isPciAddress } from '../pci/address.js';
import type { Claim } from '../pci/plan.js';

const ClaimSchema = v.object({
  owner: v.pipe(v.string(), v.minLength(1)),
  originalDriver: v.nullable(v.string()),
  originalOverride: v.nullable(v.string()),
  group: v.nullable(v.number()),
  since: v.string(),
});

const StateSchema = v.object({
  version: v.literal(1),
  claims: v.record(v.pipe(v.string(), v.check(isPciAddress, 'expected a PCI address')), ClaimSchema),
});

export type ClaimRecord = v.InferOutput<typeof ClaimSchema>;

export class StateFile {
  readonly path: string;

  /** `runRoot` is the injected `/run`; the file is `<runRoot>/vfio-hookd/state.json`. */
  constructor(runRoot: string) {
    this.path = path.join(runRoot, 'vfio-hookd', 'state.json');
  }

  /** The recorded claims; empty when there is no state yet. */
  async load(): Promise<Map<string, ClaimRecord>> {
    let text: string;
    try {
      text = await fs.readFile(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw error;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw new InvalidConfig(`State file ${q(this.path)} is not valid JSON (${(error as Error).message}); check which devices are on vfio-pci with 'vfio-hookctl devices', then remove it`);
    }
    const result = v.safeParse(StateSchema, json);
    if (!result.success) {
      const problems = result.issues.map((i) => `${v.getDotPath(i) ?? '(top)'}: ${i.message}`).join('; ');
      throw new InvalidConfig(`State file ${q(this.path)} is not valid: ${problems}`);
    }
    return new Map(Object.entries(result.output.claims));
  }

  async save(claims: ReadonlyMap<string, ClaimRecord>): Promise<void> {
    const dir = path.dirname(this.path);
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    const body = JSON.stringify({ version: 1, claims: Object.fromEntries([...claims].sort(([a], [b]) => (a < b ? -1 : 1))) }, null, 2) + '\n';
    // Unique per save: two saves in the same millisecond must not collide.
    const temp = path.join(dir, `.state.json.${process.pid}.${randomUUID()}`);
    const handle = await fs.open(temp, 'wx', 0o644);
    try {
      await handle.writeFile(body);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await fs.rename(temp, this.path);
    } catch (error) {
      await fs.rm(temp, { force: true });
      throw error;
    }
    const dirHandle = await fs.open(dir, 'r');
    try {
      await dirHandle.sync();
    } finally {
      await dirHandle.close();
    }
  }

  /** Add the claims of a detach, stamped now. */
  static withClaims(
    current: ReadonlyMap<string, ClaimRecord>,
    added: ReadonlyMap<string, Claim>,
    groups: ReadonlyMap<string, number | null>,
    now: Date = new Date(),
  ): Map<string, ClaimRecord> {
    const next = new Map(current);
    for (const [address, claim] of added) {
      const existing = current.get(address);
      next.set(address, existing && existing.owner === claim.owner ? existing : { ...claim, group: groups.get(address) ?? null, since: now.toISOString() });
    }
    return next;
  }
}
