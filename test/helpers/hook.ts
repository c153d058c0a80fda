/**
 * The real hooks/qemu as the bus tier runs it: installed as install.sh does
 * (absolute busctl), pointed at a private bus and a runtime folder, and run
 * exactly as libvirt runs it (argv, the domain XML on stdin, LC_ALL=C and a
 * short PATH, nothing else).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { ExecutionContext } from 'ava';
import { REPO, tempDir, type DaemonProcess } from './private-bus.js';

export interface HookRun {
  code: number | null;
  /** Set when the hook died of a signal. */
  signal?: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface InstalledHook {
  /** The hook's path. */
  readonly path: string;
  /** Its RUNTIME folder (where it leaves the domain XML for the daemon). */
  readonly runtime: string;
}

/** The runtime folder a daemon of private-bus.ts reads the hook's files in. */
export function daemonRuntime(daemon: DaemonProcess): string {
  return path.join(daemon.runRoot, 'vfio-hookd');
}

/**
 * The hook as install.sh installs it, with the private bus's address and a
 * RUNTIME folder: `runtime`, or a fresh one (mode 0700, removed in teardown).
 */
export async function installHook(t: ExecutionContext, busAddress: string, runtime?: string): Promise<InstalledHook> {
  const dir = await tempDir(t, 'vfio-hookd-hook-', 0o755);
  const folder = runtime ?? path.join(await tempDir(t, 'vfio-hookd-runtime-'), 'vfio-hookd');
  const text = (await fs.readFile(path.join(REPO, 'hooks', 'qemu'), 'utf8'))
    .replace(/^BUSCTL=.*$/m, 'BUSCTL=/usr/bin/busctl')
    .replace(/^BUS_ADDRESS=.*$/m, `BUS_ADDRESS='${busAddress}'`)
    .replace(/^RUNTIME=.*$/m, `RUNTIME='${folder}'`);
  const hook = path.join(dir, 'vfio-hookd');
  await fs.writeFile(hook, text, { mode: 0o755 });
  return { path: hook, runtime: folder };
}

/** The environment libvirt gives its hooks (LC_ALL=C and a PATH; HOME, USER and the like do not matter here). */
export const HOOK_ENV: Readonly<Record<string, string>> = { LC_ALL: 'C', PATH: '/usr/bin:/bin' };

/** Run the hook as libvirt does; `xml` may be bytes (for input that is not UTF-8). */
export async function runHook(
  hook: InstalledHook | string,
  args: readonly string[],
  xml: string | Buffer,
  env = HOOK_ENV,
): Promise<HookRun> {
  const file = typeof hook === 'string' ? hook : hook.path;
  // ETXTBSY: a process forked by another test of this worker (before its exec)
  // briefly holds the descriptor that wrote the hook. It passes at once; libvirt's
  // hook was written long before it runs.
  for (let attempt = 1; ; attempt++) {
    try {
      return await runOnce(file, args, xml, env);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ETXTBSY' || attempt === 50) throw error;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

async function runOnce(
  file: string,
  args: readonly string[],
  xml: string | Buffer,
  env: Readonly<Record<string, string>>,
): Promise<HookRun> {
  const child = spawn(file, args, { env: { ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  // The hook may exit before it reads all of stdin (too few arguments): not an error here.
  child.stdin.on('error', () => {});
  child.stdin.end(xml);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  return signal === null ? { code, stdout, stderr } : { code, signal, stdout, stderr };
}

/** Files left in the hook's runtime folder (it must leave none). */
export async function leftovers(hook: InstalledHook): Promise<string[]> {
  const names = await fs.readdir(hook.runtime).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith('hook-')).sort();
}
