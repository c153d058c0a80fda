/**
 * The settled check (test/helpers/settled.ts) itself: ava run on two test
 * files of a project of our own, one that leaves nothing and one that leaves
 * a tracked child process and a timer. The first passes; the second fails,
 * each leftover named.
 */
import test from 'ava';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runResult } from '../helpers/command.js';
import { tempDir } from '../helpers/temp-dir.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SETTLED = path.join(REPO, 'test', 'helpers', 'settled.ts');

const CLEAN = `import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { trackChild } from ${JSON.stringify(SETTLED)};
test('waits for its child', async (t) => {
  const child = trackChild(t, spawn('true'), 'true');
  await once(child, 'exit');
  t.pass();
});
`;

const DIRTY = `import test from 'ava';
import { spawn } from 'node:child_process';
import { trackChild } from ${JSON.stringify(SETTLED)};
test('leaves a timer', (t) => {
  setTimeout(() => {}, 600_000);
  t.pass();
});
test('leaves a child', (t) => {
  trackChild(t, spawn('sleep', ['60']), 'a sleep');
  t.pass();
});
`;

test('a test file that leaves a child or a timer fails with each named; one that leaves nothing passes', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-settled-');
  await fs.symlink(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  await fs.writeFile(
    path.join(dir, 'package.json'),
    JSON.stringify({
      type: 'module',
      ava: { files: ['*.test.mjs'], require: [SETTLED], nodeArguments: ['--import=tsx'], workerThreads: false, timeout: '60s' },
    }),
  );
  await fs.writeFile(path.join(dir, 'clean.test.mjs'), CLEAN);
  await fs.writeFile(path.join(dir, 'dirty.test.mjs'), DIRTY);
  const r = await runResult(process.execPath, [path.join(REPO, 'node_modules', 'ava', 'entrypoints', 'cli.mjs'), '--tap'], {
    cwd: dir,
    env: { ...process.env, CI: '1' },
  });
  const out = r.stdout + r.stderr;
  // The sleep outlives the worker that left it: end it here.
  const left = /a sleep \(pid ([0-9]+)\)/.exec(out);
  if (left)
    t.teardown(() => {
      try {
        process.kill(Number(left[1]!), 'SIGKILL');
      } catch {
        // already gone
      }
    });

  t.is(r.code, 1, out);
  t.regex(out, /^ok [0-9]+ - clean › waits for its child$/m);
  t.notRegex(out, /clean\.test\.mjs exited/);
  t.regex(out, /^ok [0-9]+ - dirty › leaves a timer$/m);
  t.regex(out, /^not ok [0-9]+ - dirty › leaves a child$/m);
  // TAP folds long messages over lines.
  const flat = out.replace(/\s+/g, ' ');
  t.regex(flat, /The test left a sleep \(pid [0-9]+\) running after its teardown; stop or remove it in a teardown/);
  t.regex(
    flat,
    /settled: dirty\.test\.mjs: its tests left child processes pid [0-9]+ 'sleep 60' and .*\b1 Timeout keeping the event loop alive \(process\.getActiveResourcesInfo\(\)\) after the last one, so its worker would not exit; stop it in a teardown/,
  );
  t.regex(out, /^not ok [0-9]+ - dirty\.test\.mjs exited with a non-zero exit code: 1$/m);
});
