/**
 * What the real hook tells the person starting a VM, on one stderr line,
 * while the VM starts: a did-you-mean for a VM the configuration does not
 * name, and a card function detached but not given to the guest.
 */
import test from 'ava';
import { startDaemon, startPrivateBus } from '../helpers/private-bus.js';
import { daemonRuntime, installHook, runHook } from '../helpers/hook.js';
import { WIN10_CONFIG, WIN10_XML } from '../helpers/win10.js';

test('an unmanaged VM with a configured device starts, and the hook says once which table it probably meant', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const hook = await installHook(t, bus.address, daemonRuntime(daemon));
  const xml = WIN10_XML.replace('<name>win10</name>', '<name>Windows 10</name>');
  const prepare = await runHook(hook, ['Windows 10', 'prepare', 'begin', '-'], xml);
  t.is(prepare.code, 0);
  t.is(prepare.stdout, '');
  t.regex(
    prepare.stderr,
    /^vfio-hookd: VM 'Windows 10' is not managed by vfio-hookd, but its device '0000:0b:00\.0' is configured for \[vm\.win10\].*starting it as it is\n$/,
  );
  for (const [op, sub] of [
    ['start', 'begin'],
    ['started', 'begin'],
    ['stopped', 'end'],
    ['release', 'end'],
  ] as const) {
    const later = await runHook(hook, ['Windows 10', op, sub, '-'], xml);
    t.deepEqual([later.code, later.stderr], [0, ''], `${op} ${sub} says nothing more`);
  }
});

test('a card function detached but not in the XML is named on the hook stderr, and the VM starts', async (t) => {
  const bus = await startPrivateBus(t);
  const daemon = await startDaemon(t, bus, { config: WIN10_CONFIG });
  const hook = await installHook(t, bus.address, daemonRuntime(daemon));
  // The XML gives the guest the GPU only, not its HDMI audio (0b:00.1).
  const xml = WIN10_XML.replace(
    /<hostdev mode='subsystem' type='pci' managed='no'>\s*<source>\s*<address domain='0x0000' bus='0x0b' slot='0x00' function='0x1'\/>[\s\S]*?<\/hostdev>/,
    '',
  );
  t.false(xml.includes("function='0x1'/>\n      </source>"), 'the audio hostdev is gone from the XML');
  const prepare = await runHook(hook, ['win10', 'prepare', 'begin', '-'], xml);
  t.is(prepare.code, 0, prepare.stderr);
  t.regex(prepare.stderr, /^vfio-hookd: .*'?0000:0b:00\.1'? is on vfio-pci but not given to 'win10'.*HDMI audio/);
  t.is(prepare.stderr.split('\n').length, 2, 'one line');
  t.is((await runHook(hook, ['win10', 'release', 'end', '-'], xml)).code, 0);
});
