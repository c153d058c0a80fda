/**
 * What the doctor reads, and from where: files of the system (`/etc`,
 * `/usr`, `/var`, `/lib`) under `root`, the kernel's and the device nodes
 * under the usual HostRoots. Everything is read-only. A simulated host is
 * its own root (lib/sim lays out sys/, proc/, dev/ and run/ under one
 * folder), so the tests put the etc/ and var/ a check reads beside them.
 *
 * Reads tell "missing" from "not allowed": the doctor runs as any user, and
 * a file it may not read is a check it could not make, never a problem.
 */
import fs from 'node:fs/promises';
import type { Stats } from 'node:fs';
import path from 'node:path';
import type { HostRoots } from '../../roots.js';

/** A file's text, or why there is none. */
export type ReadResult = { readonly text: string } | { readonly missing: true } | { readonly denied: true };

/** Longest file a check reads: configuration files and scripts are small; a huge one is read in part. */
const READ_LIMIT = 256 * 1024;

export class HostView {
  /** The system's `/`: `/etc`, `/usr`, `/var` hang off it. */
  readonly root: string;
  readonly roots: HostRoots;

  constructor(root: string, roots: HostRoots) {
    this.root = root;
    this.roots = roots;
  }

  /** `/etc/x` under the root. */
  sys(absolute: string): string {
    return path.join(this.root, absolute);
  }

  async read(file: string): Promise<ReadResult> {
    try {
      const handle = await fs.open(file, 'r');
      try {
        const buffer = Buffer.alloc(READ_LIMIT);
        const { bytesRead } = await handle.read(buffer, 0, READ_LIMIT, 0);
        return { text: buffer.subarray(0, bytesRead).toString('utf8') };
      } finally {
        await handle.close();
      }
    } catch (error) {
      return denied(error) ? { denied: true } : { missing: true };
    }
  }

  /** The text, or null when missing or unreadable. */
  async text(file: string): Promise<string | null> {
    const r = await this.read(file);
    return 'text' in r ? r.text : null;
  }

  async stat(file: string): Promise<Stats | null> {
    return fs.stat(file).catch(() => null);
  }

  async lstat(file: string): Promise<Stats | null> {
    return fs.lstat(file).catch(() => null);
  }

  /** Entry names, [] when missing; null when not allowed to list. */
  async list(dir: string): Promise<string[] | null> {
    try {
      return (await fs.readdir(dir)).sort();
    } catch (error) {
      return denied(error) ? null : [];
    }
  }
}

function denied(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EACCES' || code === 'EPERM';
}

/** `KEY=value` lines of systemd-style files (later wins), comments and sections ignored. */
export function iniValue(texts: readonly string[], key: string): string | null {
  let value: string | null = null;
  for (const text of texts) {
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line.startsWith('#') || line.startsWith(';')) continue;
      const m = /^([A-Za-z0-9_-]+)\s*=\s*(.*)$/.exec(line);
      if (m && m[1] === key) value = m[2]!.trim();
    }
  }
  return value;
}
