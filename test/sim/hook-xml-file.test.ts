/**
 * The file the hook leaves for HandleHookFile: which files the daemon reads,
 * and the refusal for each one it does not.
 */
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgs, UnsafePath, q } from '../../lib/errors.js';
import { DOMAIN_XML_MAX_BYTES, hookXmlDir, readHookXmlFile } from '../../lib/domain/index.js';
import { tempDir } from '../helpers/temp-dir.js';

const XML = "<domain type='kvm'><name>w\u00fcn10</name></domain>\n";

async function runtime(t: ExecutionContext): Promise<string> {
  const top = await tempDir(t, 'vfio-hookd-xmlfile-');
  const dir = hookXmlDir(top);
  await fs.mkdir(dir, { mode: 0o755 });
  return dir;
}

test("the folder is <run>/vfio-hookd, the daemon's state folder", (t) => {
  t.is(hookXmlDir('/run'), '/run/vfio-hookd');
  t.is(hookXmlDir('/tmp/x/run/'), '/tmp/x/run/vfio-hookd');
});

test("reads the hook's file as it is, and leaves it", async (t) => {
  const dir = await runtime(t);
  const file = path.join(dir, 'hook-xml.AbC123xyz0');
  await fs.writeFile(file, XML, { mode: 0o600 });
  t.is(await readHookXmlFile(dir, file), XML);
  t.is((await fs.stat(file)).mode & 0o777, 0o600, 'untouched');
  // Readable by others is no danger (mode 0644), nor is a UTF-8 byte order mark (dropped).
  await fs.chmod(file, 0o644);
  await fs.writeFile(file, `\ufeff${XML}`);
  t.is(await readHookXmlFile(dir, file), XML);
});

test('a file of exactly the cap is read', async (t) => {
  const dir = await runtime(t);
  const file = path.join(dir, 'hook-xml.cap');
  await fs.writeFile(file, 'x'.repeat(DOMAIN_XML_MAX_BYTES), { mode: 0o600 });
  t.is((await readHookXmlFile(dir, file)).length, DOMAIN_XML_MAX_BYTES);
});

const badPaths: [string, (dir: string) => string][] = [
  ['a relative path', () => 'hook-xml.x'],
  ['a file in another folder', () => '/etc/passwd'],
  ['a file named otherwise in the folder', (dir) => path.join(dir, 'state.json')],
  ['a path that climbs out and back', (dir) => `${dir}/../vfio-hookd/hook-xml.x`],
  ['a path that climbs out', (dir) => `${dir}/../hook-xml.x`],
  ['a path in a subfolder', (dir) => path.join(dir, 'sub', 'hook-xml.x')],
  ['a doubled slash', (dir) => `${dir}//hook-xml.x`],
  ['the empty string', () => ''],
];

for (const [what, make] of badPaths) {
  test(`refuses ${what} before opening anything`, async (t) => {
    const dir = await runtime(t);
    const file = make(dir);
    await t.throwsAsync(readHookXmlFile(dir, file), {
      instanceOf: InvalidArgs,
      message: `Invalid domain XML file ${q(file)}: expected a file named 'hook-*' in ${q(dir)}, refusing`,
    });
  });
}

const badFiles: [string, (file: string) => Promise<void>, new (m: string) => Error, (file: string) => string][] = [
  ['a file that is not there', async () => {}, InvalidArgs, (f) => `Domain XML file ${q(f)} does not exist, refusing`],
  ['a symlink', async (f) => fs.symlink('/etc/passwd', f), UnsafePath, (f) => `Domain XML file ${q(f)} is a symlink, refusing`],
  [
    'a symlink to a good file',
    async (f) => {
      await fs.writeFile(`${f}.target`, XML, { mode: 0o600 });
      await fs.symlink(`${f}.target`, f);
    },
    UnsafePath,
    (f) => `Domain XML file ${q(f)} is a symlink, refusing`,
  ],
  ['a folder', async (f) => fs.mkdir(f), UnsafePath, (f) => `Domain XML file ${q(f)} is not a regular file, refusing`],
  [
    'a FIFO (opening it must not hang)',
    async (f) => void execFileSync('mkfifo', ['-m', '0600', f]),
    UnsafePath,
    (f) => `Domain XML file ${q(f)} is not a regular file, refusing`,
  ],
  [
    'a hard link',
    async (f) => {
      await fs.writeFile(`${f}.other`, XML, { mode: 0o600 });
      await fs.link(`${f}.other`, f);
    },
    UnsafePath,
    (f) => `Domain XML file ${q(f)} has 2 hard links, refusing`,
  ],
  [
    'a file of another owner',
    async (f) => {
      await fs.writeFile(f, XML, { mode: 0o600 });
      await fs.chown(f, 1000, 1000);
    },
    UnsafePath,
    (f) => `Domain XML file ${q(f)} is owned by uid 1000, not root, refusing`,
  ],
  [
    'a file writable by others',
    async (f) => {
      await fs.writeFile(f, XML);
      await fs.chmod(f, 0o646);
    },
    UnsafePath,
    (f) => `Domain XML file ${q(f)} is writable by group or others (mode 0646), refusing`,
  ],
  [
    'a file writable by its group',
    async (f) => {
      await fs.writeFile(f, XML);
      await fs.chmod(f, 0o660);
    },
    UnsafePath,
    (f) => `Domain XML file ${q(f)} is writable by group or others (mode 0660), refusing`,
  ],
  [
    'a file over the cap (sparse: refused by its size, unread)',
    async (f) => {
      await fs.writeFile(f, '', { mode: 0o600 });
      await fs.truncate(f, DOMAIN_XML_MAX_BYTES + 1);
    },
    InvalidArgs,
    () =>
      `Invalid domain XML: ${DOMAIN_XML_MAX_BYTES + 1} bytes, more than the ${DOMAIN_XML_MAX_BYTES} accepted; this is not a libvirt domain definition, refusing`,
  ],
  [
    'bytes that are not UTF-8',
    async (f) => fs.writeFile(f, Buffer.from([0x3c, 0x64, 0xff, 0xfe, 0x3e]), { mode: 0o600 }),
    InvalidArgs,
    (f) => `Invalid domain XML in ${q(f)}: not UTF-8 text (libvirt writes UTF-8), refusing`,
  ],
];

for (const [what, make, instanceOf, message] of badFiles) {
  test(`refuses ${what}`, async (t) => {
    const dir = await runtime(t);
    const file = path.join(dir, 'hook-xml.test');
    await make(file);
    await t.throwsAsync(readHookXmlFile(dir, file), { instanceOf, message: message(file) });
  });
}
