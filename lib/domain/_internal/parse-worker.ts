/**
 * Worker thread body for `parseDomainXmlOffThread`: parse the document in
 * `workerData.xml`, post back the result or the error's class name and
 * message (an Error's class does not survive the structured clone).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { parseDomainXml } from '../domain-xml.js';

try {
  parentPort?.postMessage({ ok: true, info: parseDomainXml((workerData as { xml: string }).xml) });
} catch (error) {
  const e = error instanceof Error ? error : new Error(String(error));
  parentPort?.postMessage({ ok: false, name: e.name, message: e.message });
}
