/**
 * One simulated write at a time per simulated host, across processes (the
 * CLI and the daemon may use the same folder) and within one.
 *
 * The lock is a listening Unix socket in Linux's abstract namespace, named
 * after the folder's real path. The kernel owns it: it is released when the
 * holder closes it or dies, SIGKILL included, so a writer killed inside a
 * write never leaves a stale lock behind, and nothing has to guess whether
 * a recorded pid is still alive (a lock file would have to). A second
 * writer finds the name taken (EADDRINUSE), connects to the holder and waits
 * for that connection to close, which happens when the holder lets go or
 * dies; then it tries again. No polling, no timer. Abstract names belong to
 * a network namespace: processes sharing a folder must share one (the
 * tests, the CLI and a daemon started with --simulate all do).
 *
 * The lock is held only while a write decides and applies its change, never
 * while a write blocks (an unbind waiting for a VFIO fd, a hanging driver):
 * those wait before taking it, so one stuck write does not stall the others.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

const names = new Map<string, Promise<string>>();

/** The abstract socket name for a folder (a leading NUL puts it in the abstract namespace). */
function lockName(dir: string): Promise<string> {
  const key = path.resolve(dir);
  let name = names.get(key);
  if (!name) {
    name = fs
      .realpath(key)
      .catch(() => key)
      .then((real) => `\0vfio-hookd-sim:${createHash('sha256').update(real).digest('hex').slice(0, 32)}`);
    names.set(key, name);
  }
  return name;
}

/** Resolve once the current holder of `name` lets go (or dies), or at once if there is none any more. */
function holderGone(name: string): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(name);
    // ECONNREFUSED: the holder let go between our listen and this connect. 'close' follows every error.
    socket.on('error', () => {});
    socket.on('close', () => resolve());
    socket.resume();
  });
}

async function acquire(name: string): Promise<() => Promise<void>> {
  for (;;) {
    const server = net.createServer();
    const waiters = new Set<net.Socket>();
    server.on('connection', (socket) => {
      waiters.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => waiters.delete(socket));
    });
    const held = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => (error.code === 'EADDRINUSE' ? resolve(false) : reject(error)));
      server.listen(name, () => resolve(true));
    });
    if (held) {
      return () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Wake every waiter: each retries, one wins.
          for (const socket of waiters) socket.destroy();
        });
    }
    await holderGone(name);
  }
}

/** Run `fn` holding the simulated host's write lock. */
export async function withSimLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const release = await acquire(await lockName(dir));
  try {
    return await fn();
  } finally {
    await release();
  }
}
