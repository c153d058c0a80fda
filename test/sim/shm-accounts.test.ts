import * as fsp from 'node:fs/promises';
import { join } from 'node:path';

import test, { type ExecutionContext } from 'ava';

import { InvalidArgs, InvalidConfig, Timeout } from '../../lib/errors.js';
import { resolveGid, resolvePrimaryGid, resolveUid, resolveUids, userNameOf } from '../../lib/shm/accounts.js';
import { tempDir } from '../helpers/temp-dir.js';

const PASSWD = [
  'root:x:0:0:root:/root:/bin/bash',
  '# a comment',
  '',
  'alex:x:1000:100:Alex:/home/alex:/bin/bash',
  'qemu-libvirtd:x:301:301::/var/empty:/run/current-system/sw/bin/nologin',
  '+@netgroup',
  'broken:x:notanumber:0::/:/bin/sh',
].join('\n');

const GROUP = ['root:x:0:', 'users:x:100:', 'qemu-libvirtd:x:301:alex', 'kvm:x:302:alex,qemu-libvirtd'].join('\n');

/** An etc directory with our own passwd and group, removed after the test. */
async function fakeEtc(t: ExecutionContext): Promise<string> {
  const dir = await tempDir(t, 'vfio-hookd-etc-');
  await fsp.writeFile(join(dir, 'passwd'), PASSWD);
  await fsp.writeFile(join(dir, 'group'), GROUP);
  return dir;
}

test('takes numeric ids as they are, without any lookup', async (t) => {
  const nowhere = { etcRoot: '/nonexistent/etc', getent: '/nonexistent/getent' };
  t.is(await resolveUid('1000', nowhere), 1000);
  t.is(await resolveUid('0', nowhere), 0);
  t.is(await resolveGid('64055', nowhere), 64055);
  t.is(await resolveGid('4294967294', nowhere), 4294967294);
});

test('resolves names through getent', async (t) => {
  t.is(await resolveUid('root'), 0);
  t.is(await resolveGid('root'), 0);
});

test('refuses a name getent does not know', async (t) => {
  await t.throwsAsync(resolveUid('alxe-vfio-hookd-test'), {
    instanceOf: InvalidConfig,
    message: "Unknown user 'alxe-vfio-hookd-test': not in the passwd database; check the name in 'user ='",
  });
  await t.throwsAsync(resolveGid('qemu-vfio-hookd-test'), {
    instanceOf: InvalidConfig,
    message: "Unknown group 'qemu-vfio-hookd-test': not in the group database; check the name in 'group ='",
  });
});

test('reads passwd and group under etcRoot when getent is not installed', async (t) => {
  const etcRoot = await fakeEtc(t);
  const options = { etcRoot, getent: 'vfio-hookd-no-such-getent' };
  t.is(await resolveUid('alex', options), 1000);
  t.is(await resolveUid('qemu-libvirtd', options), 301);
  t.is(await resolveGid('users', options), 100);
  t.is(await resolveGid('kvm', options), 302);
  await t.throwsAsync(resolveUid('alxe', options), {
    instanceOf: InvalidConfig,
    message: "Unknown user 'alxe': not in the passwd database; check the name in 'user ='",
  });
});

test('reads only the files when getent is null', async (t) => {
  const etcRoot = await fakeEtc(t);
  t.is(await resolveUid('alex', { etcRoot, getent: null }), 1000);
  await t.throwsAsync(resolveUid('+@netgroup', { etcRoot, getent: null }), {
    instanceOf: InvalidConfig,
    message: "Unknown user '+@netgroup': not in the passwd database; check the name in 'user ='",
  });
  await t.throwsAsync(resolveUid('broken', { etcRoot, getent: null }), {
    instanceOf: InvalidConfig,
    message: "Cannot resolve user 'broken': malformed passwd entry 'broken:x:notanumber:0::/:/bin/sh'",
  });
});

const badNames: ReadonlyArray<readonly [string, string]> = [
  ['', "Invalid user name '': must not be empty"],
  ['-s', "Invalid user name '-s': must not start with '-'"],
  ['a:b', "Invalid user name 'a:b': must not contain ':', '/', spaces or control characters"],
  ['a b', "Invalid user name 'a b': must not contain ':', '/', spaces or control characters"],
  ['alex\n', "Invalid user name 'alex\\x0a': must not contain ':', '/', spaces or control characters"],
  ['4294967295', "Invalid user id '4294967295': must be at most 4294967294"],
];

for (const [name, message] of badNames) {
  test(`refuses ${JSON.stringify(name)} before any lookup`, async (t) => {
    await t.throwsAsync(resolveUid(name, { getent: '/nonexistent/getent', etcRoot: '/nonexistent/etc' }), {
      instanceOf: InvalidArgs,
      message,
    });
  });
}

test('gives up on a getent that hangs', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-getent-');
  const getent = join(dir, 'getent');
  // exec: the hanging process is the one execFile kills, so nothing outlives the test.
  await fsp.writeFile(getent, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });

  await t.throwsAsync(resolveUid('alex', { getent, timeoutMs: 200 }), {
    instanceOf: Timeout,
    message: "Looking up 'alex' in passwd timed out after 200 ms; check the name service (nsswitch.conf)",
  });
});

test("resolves a user's primary group from the passwd file, and a numeric uid as its own gid", async (t) => {
  const etc = await fakeEtc(t);
  t.is(await resolvePrimaryGid('alex', { etcRoot: etc, getent: null }), 100);
  t.is(await resolvePrimaryGid('1000', { etcRoot: etc, getent: null }), 1000);
  t.is(await resolvePrimaryGid('root'), 0);
});

test('userNameOf names a uid through getent, or the passwd file without it, and is null when it cannot', async (t) => {
  t.is(await userNameOf(0), 'root');
  const etcRoot = await fakeEtc(t);
  const files = { etcRoot, getent: 'vfio-hookd-no-such-getent' };
  t.is(await userNameOf(301, files), 'qemu-libvirtd');
  t.is(await userNameOf(1000, { etcRoot, getent: null }), 'alex');
  // No entry, an impossible id, an unreadable file: no name, never an error.
  t.is(await userNameOf(4242, files), null);
  t.is(await userNameOf(-1, files), null);
  t.is(await userNameOf(1000, { etcRoot: '/nonexistent/etc', getent: null }), null);
});

test('resolveUids looks several names up with one getent child, and leaves out what does not resolve', async (t) => {
  const dir = await tempDir(t, 'vfio-hookd-getent-');
  const log = join(dir, 'calls');
  const getent = join(dir, 'getent');
  // A getent that notes each call and hands it to the real one.
  await fsp.writeFile(getent, `#!/bin/sh\necho "$*" >>'${log}'\nexec getent "$@"\n`, { mode: 0o755 });
  const found = await resolveUids(['root', 'alxe-vfio-hookd-test', '-n', '4242', 'bad:name'], { getent });
  t.deepEqual(
    [...found],
    [
      ['4242', 4242],
      ['root', 0],
    ],
  );
  t.deepEqual((await fsp.readFile(log, 'utf8')).split('\n'), ['passwd -- root alxe-vfio-hookd-test', ''], 'one call, names only, after --');
  t.deepEqual([...(await resolveUids(['alxe-vfio-hookd-test'], { getent }))], [], 'none found (exit 2) is an empty map');
});

test('resolveUids reads the passwd file when getent is not installed, and gives up on a getent that hangs', async (t) => {
  const etcRoot = await fakeEtc(t);
  const found = await resolveUids(['qemu-libvirtd', 'alex', 'broken', 'nobody-here'], { etcRoot, getent: 'vfio-hookd-no-such-getent' });
  t.deepEqual([...found].sort(), [
    ['alex', 1000],
    ['qemu-libvirtd', 301],
  ]);
  const dir = await tempDir(t, 'vfio-hookd-getent-');
  const hang = join(dir, 'getent');
  await fsp.writeFile(hang, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
  await t.throwsAsync(resolveUids(['qemu', 'libvirt-qemu'], { getent: hang, timeoutMs: 200 }), {
    instanceOf: Timeout,
    message: "Looking up 'qemu', 'libvirt-qemu' in passwd timed out after 200 ms; check the name service (nsswitch.conf)",
  });
});
