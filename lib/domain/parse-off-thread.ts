/**
 * Parse a large domain XML on a worker thread, so the daemon's event loop
 * (and with it the bus) keeps answering meanwhile.
 *
 * fast-xml-parser is synchronous: on a small machine a 1 MiB document takes
 * a few hundred milliseconds, and a document of the 16 MiB accepted, dense
 * with small elements, several seconds. Every Peer.Ping, property read and
 * other hook would wait that long. Real domains are a few KiB: those are
 * parsed at once, where a worker's start would cost more than the parse.
 */
import { Buffer } from 'node:buffer';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Worker } from 'node:worker_threads';
import { InvalidArgs, InvalidConfig } from '../errors.js';
import { DOMAIN_XML_MAX_BYTES, parseDomainXml, type DomainInfo } from './domain-xml.js';

/** Documents up to this size (UTF-8 bytes) are parsed on the calling thread: 256 KiB, tens of milliseconds at worst. */
export const INLINE_PARSE_MAX_BYTES = 256 * 1024;

// The worker runs the same flavour of the code as this module: .js when
// built (also from the daemon's CommonJS bundle, vfio-hookd-main.cjs: the
// worker is the ES module bundle beside it), .ts under tsx (tests, development).
const FLAVOUR = path.extname(fileURLToPath(import.meta.url)) === '.ts' ? '.ts' : '.js';
const WORKER_URL = new URL(`./_internal/parse-worker${FLAVOUR}`, import.meta.url);

// Under tsx on Node 20 a worker does not inherit the TypeScript loader (tsx
// registers it on the main thread only), so the .ts flavour registers it in
// the worker before loading the body. The built daemon never takes this path.
const TSX_BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
import(workerData.tsx).then((api) => { api.register(); return import(workerData.entry); });
`;

// A small young generation: the parse allocates many short-lived objects, and each worker's heap adds to the
// daemon's resident memory (what remains after it is freed is what the benchmark's 1 MiB runs show).
const RESOURCE_LIMITS = { maxYoungGenerationSizeMb: 4 };

// node:worker_threads is loaded on the first large document, not at every start of the daemon and the CLI
// (a few ms of node's own module loading each, issue 13's start to READY=1). require, not import(): the
// daemon's bundle runs in a vm.Script, which has no dynamic import.
let workerThreads: typeof import('node:worker_threads') | undefined;

function startWorker(xml: string): Worker {
  workerThreads ??= createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
  const { Worker } = workerThreads;
  if (FLAVOUR !== '.ts') return new Worker(WORKER_URL, { workerData: { xml }, resourceLimits: RESOURCE_LIMITS });
  return new Worker(TSX_BOOTSTRAP, { eval: true, workerData: { xml, entry: WORKER_URL.href, tsx: import.meta.resolve('tsx/esm/api') } });
}

/** The errors parseDomainXml throws, by class name, rebuilt on this side of the thread. */
const ERRORS: Readonly<Record<string, new (message: string) => Error>> = { InvalidArgs, InvalidConfig };

type WorkerReply = { ok: true; info: DomainInfo } | { ok: false; name: string; message: string };

/**
 * `parseDomainXml`, on a worker thread when the document is over
 * `INLINE_PARSE_MAX_BYTES`. Same result, same errors (InvalidArgs,
 * InvalidConfig with the same message).
 */
export async function parseDomainXmlOffThread(xml: string): Promise<DomainInfo> {
  // Too large is refused at once by parseDomainXml itself, before any parse.
  const bytes = typeof xml === 'string' ? Buffer.byteLength(xml, 'utf8') : 0;
  if (bytes <= INLINE_PARSE_MAX_BYTES || bytes > DOMAIN_XML_MAX_BYTES) return parseDomainXml(xml);
  const reply = await new Promise<WorkerReply>((resolve, reject) => {
    const worker = startWorker(xml);
    let settled = false;
    worker.once('message', (message: WorkerReply) => {
      settled = true;
      resolve(message);
    });
    worker.once('error', (error) => {
      settled = true;
      reject(error);
    });
    worker.once('exit', (code) => {
      if (!settled) reject(new Error(`The domain XML parser thread exited (${code}) without an answer`));
    });
  });
  if (reply.ok) return reply.info;
  const ErrorClass = ERRORS[reply.name];
  if (ErrorClass === undefined) throw new Error(reply.message);
  throw new ErrorClass(reply.message);
}
