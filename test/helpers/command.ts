/**
 * The tests' one way to run a program, and busctl against a test's private
 * bus as an operator, or a hook of an earlier version, calls the daemon.
 */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { promisify } from 'node:util';

/** `execFile` as a promise: resolves with `{ stdout, stderr }`, rejects on a non-zero exit. */
export const run = promisify(execFile);

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `file`; resolves whatever its exit status (-1 for a signal, a timeout or a spawn failure). */
export async function runResult(file: string, args: readonly string[], options: ExecFileOptions = {}): Promise<CommandResult> {
  try {
    const { stdout, stderr } = await run(file, args, { ...options, encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: unknown; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/**
 * `busctl call org.vfiohookd1 /org/vfiohookd1 org.vfiohookd1.Manager MEMBER
 * SIGNATURE ARGS...` on `bus`; never rejects. The API's names are spelled
 * here, not taken from lib/bus/names.ts: the tests pin them.
 */
export function callManager(
  bus: { readonly address: string },
  member: string,
  signature: string,
  ...args: string[]
): Promise<CommandResult> {
  // 60 s: a crash test's prepare on a loaded 2-core machine; `--` lets an argument start with '-'.
  return runResult('busctl', [
    `--address=${bus.address}`,
    '--timeout=60',
    '--',
    'call',
    'org.vfiohookd1',
    '/org/vfiohookd1',
    'org.vfiohookd1.Manager',
    member,
    ...(signature === '' ? [] : [signature]),
    ...args,
  ]);
}

/** Manager.HandleHook with the domain XML inline (as hooks of earlier versions call it): ok, or busctl's error text. */
export async function handleHook(
  bus: { readonly address: string },
  vm: string,
  op: string,
  sub: string,
  xml: string,
  extra = '-',
): Promise<{ ok: boolean; text: string }> {
  const r = await callManager(bus, 'HandleHook', 'sssss', vm, op, sub, extra, xml);
  return r.code === 0 ? { ok: true, text: '' } : { ok: false, text: r.stderr.trim() || `busctl exited ${r.code}` };
}
