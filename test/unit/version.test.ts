import test from 'ava';
import fs from 'node:fs/promises';
import { VERSION } from '../../lib/version.js';

test('the version in lib/version.ts is the one in package.json', async (t) => {
  const pkg = JSON.parse(await fs.readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  t.is(VERSION, pkg.version);
});
