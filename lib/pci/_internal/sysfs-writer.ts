/**
 * Sysfs writes in a child process.
 *
 * A write that hangs in the kernel (an unbind from vfio-pci while QEMU holds
 * the device, an NVIDIA driver that never finishes unbinding) blocks the
 * thread that made it, and no signal frees it. Made from the daemon's own
 * threads it would eat libuv's small pool and, with it, the bus. So every
 * write goes to a small child process; when a write outlives its signal the
 * child is killed and abandoned (it may stay in the kernel until the write
 * returns) and the next write starts a fresh one.
 *
 * The child is sysfs-writer-child.cjs beside this module: plain CommonJS, so
 * it needs neither a build nor a loader, and it starts in ~40 ms once per
 * adapter. The protocol (one JSON request and one reply per line) is
 * described there. It sits next to this module in the sources and, copied by
 * the build, in dist/; a missing file makes every write fail with "sysfs
 * writer exited (1) before replying".
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KernelWriteError, KernelWriteTimeout } from '../kernel-port.js';

const CHILD_PATH = fileURLToPath(new URL('./sysfs-writer-child.cjs', import.meta.url));

interface Reply {
  id: number;
  ok: boolean;
  code?: string;
  message?: string;
}

interface Pending {
  resolve(): void;
  reject(error: Error): void;
  path: string;
}

export class SysfsWriter {
  #child: ChildProcessWithoutNullStreams | null = null;
  #pending = new Map<number, Pending>();
  #nextId = 1;

  async write(path: string, data: string, signal: AbortSignal): Promise<void> {
    if (signal.aborted) throw new KernelWriteTimeout(path);
    const child = this.#ensureChild();
    const id = this.#nextId++;
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.#pending.delete(id);
        // The child is stuck in the kernel: abandon it. Its other requests
        // (there are none: callers write one at a time) fail with it.
        this.#abandon(child);
        reject(new KernelWriteTimeout(path));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, {
        path,
        resolve: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      });
      this.#setRef(true);
      child.stdin.write(JSON.stringify({ id, path, data }) + '\n');
    });
  }

  async close(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    // The child is unref'd while idle; waiting for its exit must keep the
    // event loop alive, or Node ends with "unsettled top-level await" (13).
    child.ref();
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.stdin.end();
    });
  }

  /** Start the child now (the daemon does at its start), so the first write does not wait for a node start. */
  start(): void {
    this.#ensureChild();
  }

  #ensureChild(): ChildProcessWithoutNullStreams {
    if (this.#child) return this.#child;
    const child = spawn(process.execPath, [CHILD_PATH], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' },
    });
    // Lines split by hand, not by readline: a write's round trip is the
    // engine's cost per step, and readline's machinery was part of it.
    let pending = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      let end;
      while ((end = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 1);
        if (line !== '') this.#onReply(line);
      }
    });
    child.stderr.resume();
    child.on('exit', (code, signal) => {
      if (this.#child === child) this.#child = null;
      this.#failAll(new Error(`sysfs writer exited (${signal ?? code}) before replying`));
    });
    child.on('error', (error) => this.#failAll(error));
    this.#child = child;
    this.#setRef(false);
    return child;
  }

  #onReply(line: string): void {
    const reply = JSON.parse(line) as Reply;
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    if (this.#pending.size === 0) this.#setRef(false);
    if (reply.ok) pending.resolve();
    else pending.reject(new KernelWriteError(pending.path, reply.code ?? 'EIO', reply.message ?? 'write failed'));
  }

  #failAll(error: Error): void {
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      pending.reject(error);
    }
  }

  #abandon(child: ChildProcessWithoutNullStreams): void {
    if (this.#child === child) this.#child = null;
    child.kill('SIGKILL');
    child.unref();
    child.stdin.destroy();
    child.stdout.destroy();
    child.stderr.destroy();
    this.#failAll(new Error('sysfs writer abandoned after a timeout'));
  }

  /** Keep the event loop alive only while a write is in flight. */
  #setRef(ref: boolean): void {
    const child = this.#child;
    if (!child) return;
    for (const stream of [child.stdout, child.stderr, child.stdin] as const) {
      const handle = stream as unknown as { ref?: () => void; unref?: () => void };
      if (ref) handle.ref?.();
      else handle.unref?.();
    }
    if (ref) child.ref();
    else child.unref();
  }
}
