/**
 * A domain's XML, for the CLI (doctor, config suggest): from libvirt when
 * the CLI may ask it (`virsh --connect URI dumpxml --inactive`), else from
 * libvirt's own saved definition (`/etc/libvirt/qemu/NAME.xml`, root
 * only). The daemon never asks libvirt during a hook; the CLI may.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import type { HostView } from './doctor/host-view.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;

/** The XML and where it came from; or why there is none, and whether that is a finding (`skip: false`: libvirt has no such domain) or a check not made. */
export async function readDomain(
  host: HostView,
  connect: string | null,
  name: string,
): Promise<{ xml: string; from: string } | { error: string; skip: boolean }> {
  if (connect !== null) {
    try {
      const { stdout } = await exec('virsh', ['--connect', connect, 'dumpxml', '--inactive', '--', name], {
        timeout: 15_000,
        maxBuffer: 32 * MiB,
      });
      return { xml: stdout, from: `libvirt (${connect})` };
    } catch (error) {
      const e = error as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') return { error: 'virsh is not installed', skip: true };
      const why = (e.stderr ?? e.message).trim().split('\n').pop() ?? '';
      if (/failed to get domain|Domain not found/i.test(why))
        return { error: `libvirt has no domain named '${name}' (${why})`, skip: false };
      return { error: `libvirt did not answer: ${why}`, skip: true };
    }
  }
  const saved = host.sys(path.join('/etc/libvirt/qemu', `${name}.xml`));
  const r = await host.read(saved);
  if ('text' in r) return { xml: r.text, from: saved };
  if ('denied' in r) return { error: `cannot read ${saved}`, skip: true };
  return { error: `no domain definition at ${saved}`, skip: true };
}
