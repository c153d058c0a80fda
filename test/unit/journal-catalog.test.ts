/**
 * The journal catalog (catalog/vfio-hookd.catalog) has an entry for every
 * MESSAGE_ID the daemon sends and none other, and the real journalctl
 * accepts it: --update-catalog builds its database under a root of the
 * test's own, and --list-catalog then lists every id with its subject.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { MessageId } from '../../lib/systemd/message-ids.js';
import { REPO } from '../helpers/private-bus.js';
import { tempDir } from '../helpers/temp-dir.js';

const exec = promisify(execFile);
const CATALOG = path.join(REPO, 'catalog', 'vfio-hookd.catalog');

test('the catalog lists exactly the MESSAGE_IDs of lib/systemd/message-ids.ts, each with a subject', async (t) => {
  const text = await fs.readFile(CATALOG, 'utf8');
  const entries = [...text.matchAll(/^-- ([0-9a-f]{32})\nSubject: (.+)$/gm)].map((m) => [m[1]!, m[2]!] as const);
  t.deepEqual(entries.map(([id]) => id).sort(), Object.values(MessageId).sort());
  t.is(new Set(entries.map(([id]) => id)).size, entries.length, 'no id twice');
});

test('journalctl --update-catalog accepts it, and --list-catalog lists every id', async (t) => {
  const which = await exec('sh', ['-c', 'command -v journalctl']).catch(() => null);
  if (which === null) {
    t.log('journalctl is not installed (package systemd)');
    t.fail('journalctl is needed to check the catalog');
    return;
  }
  const root = await tempDir(t, 'vfio-hookd-catalog-');
  await fs.mkdir(path.join(root, 'usr/lib/systemd/catalog'), { recursive: true });
  await fs.copyFile(CATALOG, path.join(root, 'usr/lib/systemd/catalog/vfio-hookd.catalog'));
  await exec('journalctl', [`--root=${root}`, '--update-catalog']);
  const { stdout } = await exec('journalctl', [`--root=${root}`, '--list-catalog']);
  for (const id of Object.values(MessageId)) t.regex(stdout, new RegExp(`^${id} vfio-hookd: `, 'm'), id);
});
