import { readFileSync } from 'node:fs';

import test from 'ava';

import { InvalidArgs, InvalidConfig } from '../../lib/errors.js';
import {
  DOMAIN_XML_MAX_BYTES,
  INLINE_PARSE_MAX_BYTES,
  VFIO_XMLNS,
  parseDomainXml,
  parseDomainXmlOffThread,
} from '../../lib/domain/index.js';

const WIN10 = readFileSync(new URL('../fixtures/domains/win10.xml', import.meta.url), 'utf8');
const MiB = 1024 * 1024;

/** win10.xml grown to about `bytes` with disks in <devices> (elements, the slow case for the parser). */
function large(bytes: number, xml = WIN10): string {
  const disk = "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/x.qcow2'/><target dev='vdb'/></disk>";
  return xml.replace('<devices>', `<devices>${disk.repeat(Math.ceil(bytes / disk.length))}`);
}

/** Whether a setImmediate callback ran before `work` settled: the event loop turned meanwhile. */
async function loopTurnedDuring(work: () => Promise<unknown>): Promise<boolean> {
  let turned = false;
  const immediate = setImmediate(() => (turned = true));
  try {
    await work();
  } catch {
    // the caller checks the error separately
  }
  clearImmediate(immediate);
  return turned;
}

test('a 1 MiB domain XML parsed off the thread gives what parseDomainXml gives', async (t) => {
  const xml = large(MiB);
  t.true(xml.length > INLINE_PARSE_MAX_BYTES);
  const info = await parseDomainXmlOffThread(xml);
  t.deepEqual(info, parseDomainXml(xml));
  t.is(info.name, 'win10');
  t.deepEqual(
    info.hostdevs.map((h) => h.address),
    ['0000:0b:00.0', '0000:0b:00.1'],
  );
});

test('the event loop keeps turning while a large domain XML is parsed', async (t) => {
  t.true(await loopTurnedDuring(() => parseDomainXmlOffThread(large(MiB))));
});

test('a small domain XML is parsed at once, without a thread', async (t) => {
  // Synchronous inside: the promise settles before any setImmediate can run.
  t.false(await loopTurnedDuring(() => parseDomainXmlOffThread(WIN10)));
  t.deepEqual(await parseDomainXmlOffThread(WIN10), parseDomainXml(WIN10));
});

test('errors from the thread keep their class and message', async (t) => {
  const noName = large(MiB, WIN10.replace(/<name>win10<\/name>/, ''));
  await t.throwsAsync(parseDomainXmlOffThread(noName), {
    instanceOf: InvalidArgs,
    message: 'Invalid domain XML: no <name> element; libvirt always writes one, so this is not a domain definition',
  });

  const badMetadata = large(MiB, WIN10.replace('<metadata>', `<metadata><v:vm xmlns:v="${VFIO_XMLNS}"><v:force>maybe</v:force></v:vm>`));
  const expected = t.throws(() => parseDomainXml(badMetadata), { instanceOf: InvalidConfig });
  await t.throwsAsync(parseDomainXmlOffThread(badMetadata), { instanceOf: InvalidConfig, message: expected?.message ?? '' });

  const truncated = large(MiB).slice(0, -200);
  const malformed = t.throws(() => parseDomainXml(truncated), { instanceOf: InvalidArgs });
  await t.throwsAsync(parseDomainXmlOffThread(truncated), { instanceOf: InvalidArgs, message: malformed?.message ?? '' });
});

test('a document over the cap is refused at once, before any parse', async (t) => {
  const xml = `<domain><name>big</name><description>${'x'.repeat(DOMAIN_XML_MAX_BYTES)}</description></domain>`;
  const bytes = Buffer.byteLength(xml);
  await t.throwsAsync(parseDomainXmlOffThread(xml), {
    instanceOf: InvalidArgs,
    message: `Invalid domain XML: ${bytes} bytes, more than the ${DOMAIN_XML_MAX_BYTES} accepted; this is not a libvirt domain definition, refusing`,
  });
});
