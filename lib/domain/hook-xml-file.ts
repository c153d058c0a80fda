/**
 * The domain XML the hook leaves in the runtime folder for `HandleHookFile`.
 *
 * Why a file: the XML used to travel as one argument of busctl, and Linux
 * caps one argv element at 128 KiB (MAX_ARG_STRLEN), so a larger domain
 * failed the hook for every VM. busctl (252) cannot send a file descriptor
 * (`h` arguments are refused), so the hook writes the XML to a file of its
 * own in `<run>/vfio-hookd` (root's folder, the daemon's state folder),
 * mode 0600, passes its path, and removes it when the call returns.
 *
 * The daemon reads only such a file: directly in that folder, named
 * `hook-*`, not a symlink (O_NOFOLLOW), a regular file with one link, owned
 * by root (or by the daemon's own user) and writable by nobody else, at most
 * DOMAIN_XML_MAX_BYTES long, UTF-8 text. It reads through the descriptor it
 * checked, never the path a second time, and never changes or removes the
 * file: it is the hook's.
 */
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgs, UnsafePath, q } from '../errors.js';
import { DOMAIN_XML_MAX_BYTES } from './domain-xml.js';

/** The folder the hook writes its files in: `<run>/vfio-hookd`, the daemon's state folder. */
export function hookXmlDir(runRoot: string): string {
  return path.join(path.resolve(runRoot), 'vfio-hookd');
}

/** What the hook's `mktemp hook-xml.XXXXXXXXXX` makes; a little wider, so another caller may name its own. */
const FILE_NAME_RE = /^hook-[A-Za-z0-9._-]{1,64}$/;

function tooLarge(bytes: number): InvalidArgs {
  // The same sentence as parseDomainXml's, whichever way the document came.
  return new InvalidArgs(
    `Invalid domain XML: ${bytes} bytes, more than the ${DOMAIN_XML_MAX_BYTES} accepted; this is not a libvirt domain definition, refusing`,
  );
}

/**
 * Read the domain XML in `file`, a file the hook made in `dir` (see
 * `hookXmlDir`).
 *
 * @throws InvalidArgs for a path outside `dir` or not named `hook-*`, a file
 *   that is not there, over DOMAIN_XML_MAX_BYTES, or not UTF-8.
 * @throws UnsafePath for a symlink, a file that is not regular, has other
 *   links, another owner, or is writable by group or others.
 */
export async function readHookXmlFile(dir: string, file: string): Promise<string> {
  const base = path.basename(file);
  if (!path.isAbsolute(file) || path.join(dir, base) !== file || !FILE_NAME_RE.test(base)) {
    throw new InvalidArgs(`Invalid domain XML file ${q(file)}: expected a file named 'hook-*' in ${q(dir)}, refusing`);
  }
  let handle: fs.FileHandle;
  try {
    // O_NONBLOCK: a FIFO put there must not hang the open; it is refused below.
    // (libuv adds O_CLOEXEC to every open.)
    handle = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new UnsafePath(`Domain XML file ${q(file)} is a symlink, refusing`);
    if (code === 'ENOENT') throw new InvalidArgs(`Domain XML file ${q(file)} does not exist, refusing`);
    throw new InvalidArgs(`Cannot open the domain XML file ${q(file)}: ${(error as Error).message}, refusing`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new UnsafePath(`Domain XML file ${q(file)} is not a regular file, refusing`);
    if (st.nlink !== 1) throw new UnsafePath(`Domain XML file ${q(file)} has ${st.nlink} hard links, refusing`);
    const owners = new Set([0, process.getuid?.() ?? 0]);
    if (!owners.has(st.uid)) throw new UnsafePath(`Domain XML file ${q(file)} is owned by uid ${st.uid}, not root, refusing`);
    if ((st.mode & 0o022) !== 0) {
      throw new UnsafePath(
        `Domain XML file ${q(file)} is writable by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}), refusing`,
      );
    }
    if (st.size > DOMAIN_XML_MAX_BYTES) throw tooLarge(st.size);
    const bytes = await handle.readFile();
    // It cannot grow in root's folder unless root makes it; check what was read all the same.
    if (bytes.length > DOMAIN_XML_MAX_BYTES) throw tooLarge(bytes.length);
    return decodeUtf8(bytes, file);
  } finally {
    await handle.close();
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    throw new InvalidArgs(`Invalid domain XML in ${q(file)}: not UTF-8 text (libvirt writes UTF-8), refusing`);
  }
}
